"""A userspace Ethernet switch between TAP devices that delays and drops frames.

Owns: the lab's impaired links where the kernel has no ``sch_netem`` (``tc qdisc ... netem``
answers "unknown qdisc" on minimal kernels). It does what ``netem delay D J loss L`` on the
switch side of every host's link does: each frame delivered to a host's port waits D +/- J ms
(uniform, so frames may overtake each other, as with netem) and is lost with probability L.
Frames to the ``--plain`` ports (the test client's) pass unimpaired.
Never: forwards anything outside its own TAP devices, or keeps running after SIGTERM.

Usage: wire.py [--delay-ms D] [--jitter-ms J] [--loss L] [--seed S] [--plain NAME] TAP...
Prints ``ready`` once every TAP device exists (the caller then moves them into namespaces).
Reads commands on stdin, one a line, answering ``ok`` once applied: ``cut I`` drops every
frame to or from port I (the TAP named I-th, from 0), ``heal I`` undoes it.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--plain", action="append", default=[])
    ap.add_argument("taps", nargs="+")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    fds = [open_tap(n) for n in args.taps]
    impaired = [n not in args.plain for n in args.taps]
    port_of = {fd: p for p, fd in enumerate(fds)}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    control = sys.stdin.fileno()
    poller.register(control, select.POLLIN)
    cut: set[int] = set()
    print("ready", flush=True)

    macs: dict[bytes, int] = {}
    queue: list[tuple[float, int, int, bytes]] = []  # (due, seq, port, frame)
    seq = 0
    delivered = dropped = 0

    def send(port: int, frame: bytes) -> None:
        try:
            os.write(fds[port], frame)
        except OSError:
            pass  # interface down, gone, or its queue full: the frame is lost, as on a wire

    while not stop:
        now = time.monotonic()
        wait_ms = 500 if not queue else max(0, int((queue[0][0] - now) * 1000))
        try:
            events = poller.poll(wait_ms)
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == control:
                line = sys.stdin.readline()
                if not line:  # the caller is gone
                    stop = True
                    break
                verb, _, port = line.partition(" ")
                (cut.add if verb == "cut" else cut.discard)(int(port))
                print("ok", flush=True)
                continue
            if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                poller.unregister(fd)  # the host's namespace went away
                continue
            src = port_of[fd]
            while True:
                try:
                    frame = os.read(fd, 65536)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        poller.unregister(fd)
                    break
                if len(frame) < 14:
                    continue
                dst_mac, src_mac = frame[0:6], frame[6:12]
                if src in cut:
                    continue
                macs[src_mac] = src
                if dst_mac[0] & 1 or dst_mac not in macs:
                    outs = [p for p in range(len(fds)) if p != src]  # flood
                else:
                    outs = [macs[dst_mac]] if macs[dst_mac] != src else []
                for dst in outs:
                    if dst in cut:
                        continue
                    if not impaired[dst]:
                        send(dst, frame)
                        continue
                    if rng.random() < args.loss:
                        dropped += 1
                        continue
                    delay = max(0.0, args.delay_ms + rng.uniform(-args.jitter_ms, args.jitter_ms)) / 1000
                    seq += 1
                    heapq.heappush(queue, (time.monotonic() + delay, seq, dst, frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, dst, frame = heapq.heappop(queue)
            send(dst, frame)
            delivered += 1
    print(f"delivered {delivered} delayed frames, dropped {dropped}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
