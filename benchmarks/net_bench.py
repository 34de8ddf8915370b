"""Loopback throughput of two ``PeerNetwork``s: one-way messages, one sender, one receiver.

Run: ``python3 benchmarks/net_bench.py [--small N] [--large N] [--json]``. It measures what the
node's PBFT traffic (small messages) and the file store's chunk exchange (256 KiB messages)
can push through one authenticated, encrypted link in one process (both ends share the loop,
so the figure is a lower bound for two processes on two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time

from pienode.crypto.keys import PrivateKey
from pienode.net import CHANNEL_CONSENSUS, CHANNEL_FILES, NetConfig, PeerAddress, PeerNetwork


async def _pair(on_message):  # type: ignore[no-untyped-def]
    keys = {name: PrivateKey.generate() for name in ("bench-a", "bench-b")}
    socks = {}
    for name in keys:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks[name] = sock
    peers = {n: PeerAddress("127.0.0.1", socks[n].getsockname()[1], keys[n].public_key) for n in keys}
    cfg = NetConfig(queue_limit=1 << 20, queue_bytes=1 << 30)
    sender = PeerNetwork("bench-a", keys["bench-a"], peers, config=cfg)
    receiver = PeerNetwork("bench-b", keys["bench-b"], peers, config=cfg, on_message=on_message)
    await sender.start("127.0.0.1", 0, sock=socks["bench-a"])
    await receiver.start("127.0.0.1", 0, sock=socks["bench-b"])
    await sender.wait_connected()
    return sender, receiver


async def _run(count: int, size: int, channel: int, window: int) -> dict[str, float]:
    received = 0
    done = asyncio.Event()

    def on_message(peer: str, ch: int, payload: bytes) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    sender, receiver = await _pair(on_message)
    payload = b"x" * size
    start = time.perf_counter()
    sent = 0
    while sent < count:
        # Keep at most `window` messages in flight so the queue stays bounded, as a node would.
        while sent < count and sent - received < window:
            if not sender.send("bench-b", channel, payload):
                break
            sent += 1
        await asyncio.sleep(0)
    await done.wait()
    elapsed = time.perf_counter() - start
    frames = sender.stats.frames_out
    await sender.stop()
    await receiver.stop()
    return {
        "messages": count,
        "bytes_each": size,
        "seconds": round(elapsed, 4),
        "msgs_per_s": round(count / elapsed),
        "mib_per_s": round(count * size / elapsed / (1 << 20), 1),
        "messages_per_frame": round(count / max(frames, 1), 1),
    }


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200_000, help="200-byte messages to send")
    parser.add_argument("--large", type=int, default=2_000, help="256 KiB messages to send")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {
        "small_200B": await _run(args.small, 200, CHANNEL_CONSENSUS, window=20_000),
        "large_256KiB": await _run(args.large, 256 * 1024, CHANNEL_FILES, window=64),
    }
    if args.json:
        print(json.dumps(results))
    else:
        for name, r in results.items():
            print(f"{name:>13}: {r['msgs_per_s']:>9,} msg/s  {r['mib_per_s']:>8} MiB/s  "
                  f"({r['messages']} in {r['seconds']} s, {r['messages_per_frame']} msg/frame)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
