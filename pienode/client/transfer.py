"""Streaming encryption on upload and decryption on download, in constant memory.

The cipher runs in a worker thread; pieces cross between it and the event loop through a
small bounded queue, so a 1 GB record never holds more than a few MiB in memory.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from pienode.crypto.stream import ciphertext_size, decrypt_stream, encrypt_stream, read_aligned

_DONE = object()
QUEUE_DEPTH = 8


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: int, enabled: bool | None = None) -> None:
        self.label, self.total, self.done = label, max(total, 1), 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._start = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            frac = min(self.done / self.total, 1.0)
            rate = self.done / max(now - self._start, 1e-6) / 2**20
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {rate:7.1f} MiB/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _pump(gen_factory: Callable[[], Iterator[bytes]], q: "queue.Queue[Any]", stop: threading.Event) -> None:
    try:
        for piece in gen_factory():
            while not stop.is_set():
                try:
                    q.put(piece, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        q.put(_DONE)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        q.put(exc)


async def encrypted_pieces(path: Path, dek: bytes, progress: Progress | None = None) -> AsyncIterator[bytes]:
    """The encrypted stream of the file at ``path``, piece by piece."""
    q: "queue.Queue[Any]" = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()

    def gen() -> Iterator[bytes]:
        with open(path, "rb") as f:
            yield from encrypt_stream(dek, read_aligned(f))

    t = threading.Thread(target=_pump, args=(gen, q, stop), daemon=True)
    t.start()
    try:
        while True:
            item = await asyncio.to_thread(q.get)
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            if progress:
                progress.add(len(item))
            yield item
    finally:
        stop.set()


def encrypted_size(path: Path) -> int:
    return ciphertext_size(path.stat().st_size)


async def decrypt_to_file(pieces: AsyncIterator[bytes], dek: bytes, out: Path,
                          progress: Progress | None = None) -> int:
    """Decrypt ``pieces`` into ``out``: written to a temporary file beside it and renamed
    only once every chunk authenticated; on any failure nothing is left behind."""
    q: "queue.Queue[Any]" = queue.Queue(maxsize=QUEUE_DEPTH)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    tmp = Path(tmp_name)
    written = 0

    def consume() -> int:
        n = 0
        with os.fdopen(fd, "wb") as f:
            def source() -> Iterator[bytes]:
                while True:
                    item = q.get()
                    if item is _DONE:
                        return
                    yield item

            for plain in decrypt_stream(dek, source()):
                f.write(plain)
                n += len(plain)
            f.flush()
            os.fsync(f.fileno())
        return n

    loop = asyncio.get_running_loop()
    consumer = loop.run_in_executor(None, consume)
    try:
        async for piece in pieces:
            while True:
                if consumer.done():
                    break
                try:
                    q.put_nowait(piece)
                    break
                except queue.Full:
                    await asyncio.sleep(0.001)
            if consumer.done():
                break
            if progress:
                progress.add(len(piece))
        if not consumer.done():
            await asyncio.to_thread(q.put, _DONE)
        written = await consumer
        os.replace(tmp, out)
        return written
    except BaseException:
        if not consumer.done():
            try:
                q.put_nowait(_DONE)
            except queue.Full:
                pass
        try:
            await asyncio.wait_for(asyncio.shield(consumer), 5)
        except BaseException:
            pass
        tmp.unlink(missing_ok=True)
        raise
