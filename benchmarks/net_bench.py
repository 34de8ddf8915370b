"""Loopback one-way throughput between two ``PeerNetwork``s over one authenticated link.

Run: ``python3 benchmarks/net_bench.py [--small N] [--large N] [--mode both|inproc|procs]
[--json]``. Small messages are 200 bytes on the consensus channel (PBFT traffic); large ones
are 256 KiB on the files channel (the file store's chunk exchange). ``inproc`` runs both ends
on one event loop (one core does both halves); ``procs`` puts the receiver in its own process,
as two nodes would be. The sender keeps its queue under a window, as a node's runtime would,
so nothing is dropped; the clock stops when the receiver reports the last message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time
from typing import Callable

from pienode.crypto.keys import PrivateKey
from pienode.net import CHANNEL_CONSENSUS, CHANNEL_FILES, NetConfig, PeerAddress, PeerNetwork

SENDER, RECEIVER = "bench-a", "bench-b"
CONFIG = NetConfig(queue_limit=1 << 20, queue_bytes=1 << 30)


def _bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _receiver(
    secret: bytes, peers: dict[str, PeerAddress], sock: socket.socket, count: int,
    on_done: Callable[[PeerNetwork], None],
) -> PeerNetwork:
    received = 0

    def on_message(peer: str, channel: int, payload: bytes) -> None:
        nonlocal received
        received += 1
        if received == count:
            on_done(net)

    net = PeerNetwork(RECEIVER, PrivateKey.from_bytes(secret), peers, config=CONFIG, on_message=on_message)
    await net.start("127.0.0.1", 0, sock=sock)
    return net


def _receiver_process(secret: bytes, peers: dict[str, PeerAddress], sock: socket.socket, count: int) -> None:
    async def main() -> None:
        finished = asyncio.Event()

        def done(net: PeerNetwork) -> None:
            net.send(SENDER, CHANNEL_CONSENSUS, b"done")
            finished.set()

        net = await _receiver(secret, peers, sock, count, done)
        await finished.wait()
        await asyncio.sleep(0.2)  # let "done" leave before the link closes
        await net.stop()

    asyncio.run(main())


async def _run(count: int, size: int, channel: int, window: int, procs: bool) -> dict[str, object]:
    keys = {SENDER: PrivateKey.generate(), RECEIVER: PrivateKey.generate()}
    socks = {name: _bound_socket() for name in keys}
    peers = {n: PeerAddress("127.0.0.1", socks[n].getsockname()[1], keys[n].public_key) for n in keys}
    finished = asyncio.Event()
    child = None
    receiver = None
    if procs:
        child = multiprocessing.get_context("fork").Process(
            target=_receiver_process, args=(keys[RECEIVER].to_bytes(), peers, socks[RECEIVER], count)
        )
        child.start()
        sender = PeerNetwork(SENDER, keys[SENDER], peers, config=CONFIG,
                             on_message=lambda p, c, b: finished.set())
    else:
        receiver = await _receiver(keys[RECEIVER].to_bytes(), peers, socks[RECEIVER], count,
                                   lambda net: finished.set())
        sender = PeerNetwork(SENDER, keys[SENDER], peers, config=CONFIG)
    await sender.start("127.0.0.1", 0, sock=socks[SENDER])
    await sender.wait_connected()
    payload = b"x" * size
    start = time.perf_counter()
    sent = 0
    while sent < count:
        depth = sum(sender.queue_depths().get(RECEIVER, (0, 0)))
        burst = min(count - sent, window - depth)
        for _ in range(burst):
            if not sender.send(RECEIVER, channel, payload):
                raise SystemExit("unexpected drop")
        sent += max(burst, 0)
        await asyncio.sleep(0)
    await finished.wait()
    elapsed = time.perf_counter() - start
    frames = sender.stats.frames_out
    await sender.stop()
    if receiver is not None:
        await receiver.stop()
    if child is not None:
        child.join(10)
    return {
        "messages": count,
        "bytes_each": size,
        "seconds": round(elapsed, 4),
        "msgs_per_s": round(count / elapsed),
        "mib_per_s": round(count * size / elapsed / (1 << 20), 1),
        "messages_per_frame": round(count / max(frames, 1), 1),
    }


async def _rtt(count: int) -> dict[str, object]:
    """Sequential 200-byte request/response round trips (what a PBFT phase costs on the wire)."""
    keys = {SENDER: PrivateKey.generate(), RECEIVER: PrivateKey.generate()}
    socks = {name: _bound_socket() for name in keys}
    peers = {n: PeerAddress("127.0.0.1", socks[n].getsockname()[1], keys[n].public_key) for n in keys}

    async def answer(peer: str, channel: int, payload: bytes) -> bytes:
        return payload

    server = PeerNetwork(RECEIVER, keys[RECEIVER], peers, on_request=answer)
    client = PeerNetwork(SENDER, keys[SENDER], peers)
    await server.start("127.0.0.1", 0, sock=socks[RECEIVER])
    await client.start("127.0.0.1", 0, sock=socks[SENDER])
    await client.wait_connected()
    samples = []
    payload = bytes(200)
    for _ in range(count):
        t0 = time.perf_counter()
        await client.request(RECEIVER, CHANNEL_CONSENSUS, payload, timeout=5)
        samples.append(time.perf_counter() - t0)
    await client.stop()
    await server.stop()
    samples.sort()
    return {
        "requests": count,
        "p50_us": round(samples[len(samples) // 2] * 1e6),
        "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6),
    }


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small", type=int, default=300_000, help="200-byte messages to send")
    parser.add_argument("--large", type=int, default=2_000, help="256 KiB messages to send")
    parser.add_argument("--mode", choices=("both", "inproc", "procs"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    modes = ["inproc", "procs"] if args.mode == "both" else [args.mode]
    results: dict[str, object] = {}
    for mode in modes:
        procs = mode == "procs"
        results[f"{mode}_small_200B"] = await _run(args.small, 200, CHANNEL_CONSENSUS, 20_000, procs)
        results[f"{mode}_large_256KiB"] = await _run(args.large, 256 * 1024, CHANNEL_FILES, 64, procs)
    results["inproc_rtt_200B"] = await _rtt(2000)
    if args.json:
        print(json.dumps(results))
        return
    for name, r in results.items():
        assert isinstance(r, dict)
        if "p50_us" in r:
            print(f"{name:>20}: request round trip p50 {r['p50_us']} us, p99 {r['p99_us']} us")
            continue
        print(f"{name:>20}: {r['msgs_per_s']:>9,} msg/s {r['mib_per_s']:>8} MiB/s  "
              f"({r['messages']} in {r['seconds']} s, {r['messages_per_frame']} msg/frame)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
