"""Appending to a file around the page cache: O_DIRECT through page-aligned staging buffers.

Owns: the staging buffers (``Stage``, ``StagePool``) and ``Appender``, which both the file
store's pack writer (``pienode.files.packs``) and the client's download output
(``pienode.client.transfer``) write through.

Why: in this VM a page the guest freed costs a host fault when it is touched again, so
bytes written through the page cache cost 0.4-3.3 CPU-s per GiB of system time (fresh
page-cache pages); written with O_DIRECT from a staging buffer whose pages stay warm (a
pool keeps them), 0.05-0.1 CPU-s per GiB.

How an ``Appender`` writes: bytes are copied into a page-aligned staging buffer
(``STAGE_BYTES``). Each full buffer goes out with O_DIRECT (Linux): whole aligned extents,
no page-cache copy. At ``finish`` the last partial page goes out padded with zeros and the
file is cut back to its true end (ftruncate). An appender that starts inside a page first
reads back the bytes of that page before its start and rewrites the page whole: the same
bytes, so even a torn write leaves them as they were. An appender that never fills its
buffer writes buffered, once, at ``finish`` (its bytes stay in the page cache for a read
right after). Where O_DIRECT is refused (EINVAL at open or write: tmpfs, odd block sizes),
it writes buffered from then on: one ``pwrite`` per staging buffer.

Must never: change a byte of the file before the appender's start, or fsync (durability is
the caller's: the pack writer fsyncs before it indexes anything, a download does not).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

#: O_DIRECT needs buffer addresses, offsets and lengths aligned to the device's logical
#: block size (512 here); a page is a multiple of any usual one.
ALIGN = 4096
#: Bytes an appender stages before a direct write (also the most a small, buffered one holds).
STAGE_BYTES = 8 << 20
O_DIRECT = getattr(os, "O_DIRECT", 0)
#: With ``writeback``, a buffered appender starts the kernel's write-back each time this many
#: bytes are appended. Measured here: 1 GiB appended then fsynced took 0.3-0.5 s + 0.55-0.65 s;
#: with write-back started every 16 MiB, 0.6 s + 0.02 s (the disk works while bytes stream in).
WRITEBACK_BYTES = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux/glibc: the final fsync does all the work
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to begin writing ``[offset, offset+length)`` of ``fd`` to disk, without
    waiting (ctypes releases the GIL). Durability still comes only from fsync."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class ShortFile(OSError):
    """The file is shorter than an appender's start: bytes it relies on are missing."""


class Stage:
    """One page-aligned staging buffer (an anonymous mmap)."""

    __slots__ = ("_map", "view")

    def __init__(self) -> None:
        # Private: a process forked later (contract workers) must not share these bytes.
        self._map = mmap.mmap(-1, STAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)

    def close(self) -> None:
        self.view.release()
        self._map.close()


class StagePool:
    """Staging buffers kept for reuse (thread-safe): their pages stay mapped and warm."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._free: list[Stage] = []
        self._lock = threading.Lock()

    def take(self) -> Stage:
        with self._lock:
            if self._free:
                return self._free.pop()
        return Stage()

    def give(self, stage: Stage) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(stage)
                return
        stage.close()

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for stage in free:
            stage.close()


class Appender:
    """Appends bytes to the file at ``path`` (``fd``: open on it for reading and writing) from
    offset ``start``. Not thread-safe: one writer, one thread at a time.

    The staging buffer covers the file from ``_base`` (page-aligned); its first ``_head``
    bytes stand for bytes before ``start`` not read into it (yet); ``_fill`` bytes of it are
    in use. ``on_refused`` is called once if O_DIRECT is refused here (the owner stops
    asking for it)."""

    def __init__(self, fd: int, path: Path | str, start: int, stages: StagePool, *, direct: bool,
                 writeback: bool = False, on_refused: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self._path = path
        self._stages = stages
        self.end = start
        self._base = start - start % ALIGN
        self._fill = self._head = start - self._base
        self._stage: Stage | None = None
        self._direct = direct and O_DIRECT != 0
        self._dfd = -1
        self.wrote_direct = False
        self._writeback = writeback
        self._flushed = start  # buffered mode: where write-back was last started
        self._on_refused = on_refused

    @property
    def stage(self) -> Stage | None:
        return self._stage

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._stage is None:
            self._stage = self._stages.take()
        buf = self._stage.view
        view = memoryview(data).cast("B")
        n = len(view)
        pos = 0
        while pos < n:
            fill = self._fill
            k = min(STAGE_BYTES - fill, n - pos)
            buf[fill:fill + k] = view[pos:pos + k]
            self._fill = fill + k
            pos += k
            if self._fill == STAGE_BYTES:
                self._flush(STAGE_BYTES)
                self._base += STAGE_BYTES
                self._fill = self._head = 0
        self.end += n

    def finish(self) -> None:
        """Write what is staged and cut the file back to its true end. Does not fsync."""
        if self._fill > self._head:
            if self.wrote_direct and self._direct:
                # The last partial page, padded; the padding is cut off just below.
                fill = self._fill
                padded = -(-fill // ALIGN) * ALIGN
                buf = self._stage.view  # type: ignore[union-attr]  # set: bytes are staged
                buf[fill:padded] = bytes(padded - fill)
                self._flush(padded)
            else:
                # Never filled a stage: one buffered write, which leaves the bytes in the
                # page cache for a read right after.
                self._write_buffered(self._fill)
        if self.wrote_direct:
            os.ftruncate(self._fd, self.end)

    def close(self) -> None:
        """Give the staging buffer back and close the direct fd (not ``fd``: the caller's)."""
        if self._stage is not None:
            self._stages.give(self._stage)
            self._stage = None
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

    def _flush(self, length: int) -> None:
        """Write the first ``length`` bytes of the stage (direct if we can) at ``_base``."""
        if not (self._direct and self._write_direct(length)):
            self._write_buffered(length)

    def _write_direct(self, length: int) -> bool:
        """False, having written nothing that matters, if O_DIRECT is refused here."""
        assert self._stage is not None
        buf = self._stage.view
        try:
            if self._dfd < 0:
                self._dfd = os.open(self._path, os.O_WRONLY | O_DIRECT)
            if self._head:
                # The bytes before our start in the page we start in, so it is rewritten unchanged.
                if os.preadv(self._fd, [buf[:self._head]], self._base) != self._head:
                    raise ShortFile(errno.EIO, "file shorter than the appender's start", str(self._path))
                self._head = 0
            pwrite_all(self._dfd, buf[:length], self._base)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # This filesystem or device refuses O_DIRECT (or its alignment): buffered from now on.
            self._direct = False
            if self._on_refused is not None:
                self._on_refused()
            return False
        self.wrote_direct = True
        return True

    def _write_buffered(self, length: int) -> None:
        assert self._stage is not None
        skip = self._head  # bytes before our start, which the stage does not hold
        if length > skip:
            pwrite_all(self._fd, self._stage.view[skip:length], self._base + skip)
        end = self._base + length
        if self._writeback and end - self._flushed >= WRITEBACK_BYTES:
            start_writeback(self._fd, self._flushed, end - self._flushed)
            self._flushed = end
