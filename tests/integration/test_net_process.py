"""A peer in another OS process, killed with SIGKILL and restarted: the link heals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

import pienode
from pienode.crypto.keys import PrivateKey
from pienode.net import CHANNEL_SYNC, NetConfig, PeerAddress, PeerNetwork

pytestmark = pytest.mark.timeout(60)

CHILD = r"""
import asyncio, json, sys
from pienode.crypto.keys import PrivateKey, PublicKey
from pienode.net import PeerAddress, PeerNetwork

async def main():
    spec = json.loads(sys.argv[1])
    peers = {n: PeerAddress("127.0.0.1", p, PublicKey(bytes.fromhex(k))) for n, (p, k) in spec["peers"].items()}
    async def echo(peer, channel, payload):
        return b"pid:" + str(spec["tag"]).encode() + b":" + payload
    net = PeerNetwork(spec["id"], PrivateKey.from_bytes(bytes.fromhex(spec["secret"])), peers, on_request=echo)
    await net.start("127.0.0.1", spec["port"])
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def until(condition, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def spawn(spec: dict) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(Path(pienode.__file__).resolve().parents[1]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(spec), stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.strip() == b"ready"
    return proc


async def test_peer_killed_with_sigkill_and_restarted_relinks():
    keys = {"hospital-1": PrivateKey.generate(), "hospital-2": PrivateKey.generate()}
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    child_port = probe.getsockname()[1]
    probe.close()  # the child binds it (with SO_REUSEADDR) right away
    ports = {"hospital-1": sock.getsockname()[1], "hospital-2": child_port}
    peers = {n: PeerAddress("127.0.0.1", ports[n], keys[n].public_key) for n in keys}
    spec = {
        "id": "hospital-2", "secret": keys["hospital-2"].to_bytes().hex(), "port": child_port,
        "peers": {n: [ports[n], keys[n].public_key.hex()] for n in keys},
    }
    net = PeerNetwork("hospital-1", keys["hospital-1"], peers, config=NetConfig(backoff_max=0.5))
    await net.start("127.0.0.1", 0, sock=sock)
    procs = []
    try:
        for tag in (1, 2):
            procs.append(await spawn({**spec, "tag": tag}))
            await net.wait_connected(timeout=15)
            answer = await net.request("hospital-2", CHANNEL_SYNC, b"hi", timeout=5)
            assert answer == b"pid:%d:hi" % tag  # really the new process
            procs[-1].send_signal(signal.SIGKILL)
            await procs[-1].wait()
            await until(lambda: net.connected_peers() == set())
        assert net.stats.reconnects == 1 and net.stats.handshakes_ok == 2
        assert net.stats.bad_frames == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await net.stop()
