"""Pack file I/O: ``PackWriter`` (appending blocks), the staging buffers it writes through,
and large reads that bypass the page cache (``read_run``).

Owns: how a writer's bytes reach its pack and the disk, and how a large run is read back. ``pienode.files.store`` owns the
index, the pool of packs, reads and gc; this module never touches the index itself (the
store's ``_commit`` does, after the fsync here).

How bytes are written: a writer copies its blocks into a page-aligned staging buffer
(``STAGE_BYTES``, from a small pool the store keeps, so its pages stay warm: in this VM a page
the guest freed costs a host fault when touched again, which made page-cache writes cost
0.4-3.3 CPU-s per GiB). A writer that fills its buffer writes it with O_DIRECT (Linux):
whole aligned extents, no page-cache copy (0.05-0.1 CPU-s per GiB). At commit its last
partial page goes out padded with zeros, the pack is cut back to its true end (ftruncate)
and fsynced. A writer that begins inside a page (its pack's committed end) first reads back
the committed part of that page and rewrites the page whole: the same bytes, so even a torn
write leaves the committed prefix as it was.

A writer that never fills its buffer (a small upload, a few pulled blocks) writes buffered,
once, at commit: its bytes then stay in the page cache for a read right after (a download
of a file just uploaded). Where O_DIRECT is refused (EINVAL: tmpfs, odd block sizes), the
store switches to buffered writes for good, as before: one ``pwrite`` per staging buffer,
write-back started every ``WRITEBACK_BYTES`` (``sync_file_range``), fsync at commit.

Reads go through the store's buffered fds: Linux keeps O_DIRECT writes and the page cache
coherent (a direct write drops the cached pages it covers). A large run that is not in the
page cache (a file a large writer put there) is read with O_DIRECT into a staging buffer
(``read_run``): filling the page cache would cost the same fresh pages as writing through it
did (1 GiB: 0.1-2.1 CPU-s of system time buffered, 0.08 direct).

Must never: change a committed byte of a pack, or let a block be indexed before the fsync
that makes it durable (``commit`` fsyncs, then hands the index entries to the store).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable

from pienode.buffers import scratch
from pathlib import Path
from typing import TYPE_CHECKING

from pienode.errors import FileStoreError
from pienode.files.cid import CID
from pienode.storage.kv import WriteOps

if TYPE_CHECKING:
    from pienode.files.store import PackStore

LOC = struct.Struct(">IQI")  # pack, offset, length
ROOT = struct.Struct(">Qd")  # file size, unix time added
U64 = struct.Struct(">Q")

#: O_DIRECT needs buffer addresses, offsets and lengths aligned to the device's logical
#: block size (512 here); a page is a multiple of any usual one.
ALIGN = 4096
#: Bytes a writer stages before a direct write (also the most a small, buffered writer holds).
STAGE_BYTES = 8 << 20
#: Staging buffers the store keeps for reuse (an upload, a push session, an exchange batch, gc).
STAGE_POOL = 4
#: In buffered mode a writer starts the kernel's write-back each time this many bytes are
#: appended. Measured here: 1 GiB appended then fsynced took 0.3-0.5 s + 0.55-0.65 s; with
#: write-back started every 16 MiB, 0.6 s + 0.02 s (the disk works while the upload streams in).
WRITEBACK_BYTES = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2
O_DIRECT = getattr(os, "O_DIRECT", 0)
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
#: Runs read back of at least this many bytes try the page cache without waiting, then the
#: disk with O_DIRECT (``read_run``); smaller ones use a plain buffered ``pread``.
DIRECT_READ_MIN = 1 << 20


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


def pack_name(pack: int) -> str:
    return f"{pack:08d}.pack"


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


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

    def __init__(self, keep: int = STAGE_POOL) -> None:
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


class PackWriter:
    """Appends blocks to one pack; nothing is visible until ``commit``. Not thread-safe:
    one upload (or one exchange batch) uses one writer from one thread at a time.

    The staging buffer covers the pack from ``_base`` (page-aligned); its first ``_head``
    bytes stand for committed bytes of the pack not read into it (yet); ``_fill`` bytes of
    it are in use."""

    def __init__(self, store: "PackStore", pack: int, fd: int, start: int, *,
                 path: Path, stages: StagePool, direct: bool) -> None:
        self._store = store
        self.pack = pack
        self._fd = fd
        self._path = path
        self._stages = stages
        self._start = start
        self._end = start
        self._base = start - start % ALIGN
        self._fill = self._head = start - self._base
        self._stage: Stage | None = None
        self._direct = direct
        self._dfd = -1
        self.wrote_direct = False
        self._flushed = start  # buffered mode: where write-back was last started
        self._pending: dict[bytes, tuple[int, int]] = {}
        self._deduped: set[bytes] = set()
        self.closed = False

    def put(self, cid: CID, data: bytes | memoryview, *, force: bool = False) -> None:
        """Append one block whose CID the caller computed. A block already stored is
        skipped (content addressing dedups), unless ``force`` (compaction moves blocks)."""
        if self.closed:
            raise FileStoreError("writer is closed")
        d = cid.digest
        if d in self._pending or d in self._deduped:
            return
        store = self._store
        if not force:
            # Claimed before the check, so a concurrent gc cannot drop the stored copy
            # between this check and our commit.
            store._claim(d)
            if store._kv.get(b"B" + d) is not None:
                self._deduped.add(d)
                return
            store._unclaim_one(d)
        if self._stage is None:
            self._stage = self._stages.take()
        buf = self._stage.view
        view = memoryview(data)
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
        self._pending[d] = (self._end, n)
        self._end += n

    @property
    def bytes_written(self) -> int:
        return self._end - self._start

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
                # The committed bytes of the page we start in, so it is rewritten unchanged.
                if os.preadv(self._fd, [buf[:self._head]], self._base) != self._head:
                    raise FileStoreError("pack is shorter than its committed length", pack=self.pack)
                self._head = 0
            _pwrite_all(self._dfd, buf[:length], self._base)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # This filesystem or device refuses O_DIRECT (or its alignment): buffered from now
            # on, here and for the store's later writers.
            self._direct = False
            self._store.direct = False
            return False
        self.wrote_direct = True
        return True

    def _write_buffered(self, length: int) -> None:
        assert self._stage is not None
        skip = self._head  # committed bytes the stage does not hold
        if length > skip:
            _pwrite_all(self._fd, self._stage.view[skip:length], self._base + skip)
        end = self._base + length
        if end - self._flushed >= WRITEBACK_BYTES:
            start_writeback(self._fd, self._flushed, end - self._flushed)
            self._flushed = end

    def commit(self, root: CID | None = None, size: int = 0) -> None:
        """Make the blocks durable, then visible, together with ``root`` if given."""
        if self.closed:
            raise FileStoreError("writer is closed")
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
            os.ftruncate(self._fd, self._end)
        if self._end > self._start:
            os.fsync(self._fd)
        self._close_io()
        ops = WriteOps()
        for d, (off, n) in self._pending.items():
            ops.put(b"B" + d, LOC.pack(self.pack, off, n))
        ops.put(b"S" + U64.pack(self.pack), U64.pack(self._end))
        if root is not None:
            ops.put(b"R" + root.to_bytes(), ROOT.pack(size, time.time()))
        self._store._commit(self, ops, self._pending, root)
        self.closed = True

    def abort(self) -> None:
        """Drop everything this writer appended."""
        if self.closed:
            return
        self.closed = True
        os.ftruncate(self._fd, self._start)
        self._end = self._start
        self._close_io()
        self._store._release(self, self._pending)

    def _close_io(self) -> None:
        if self._stage is not None:
            self._stages.give(self._stage)
            self._stage = None
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

    def __enter__(self) -> "PackWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def read_run(fd: int, path: Path, off: int, n: int, stages: StagePool) -> bytearray | None:
    """``n`` bytes at ``off`` of the pack at ``path`` (``fd``: its buffered read fd): from the
    page cache if it holds them all, else from disk with O_DIRECT through a staging buffer,
    so a cold read does not fill the page cache. None if the run cannot be read whole.

    Raises:
        OSError: EINVAL where O_DIRECT is refused (the caller reads buffered instead).
    """
    buf = scratch(n)
    if _RWF_NOWAIT:
        try:
            if os.preadv(fd, [buf], off, _RWF_NOWAIT) == n:
                return buf
        except OSError:  # EAGAIN: not cached (or no RWF_NOWAIT here): from disk below
            pass
    lo = off - off % ALIGN
    hi = -(-(off + n) // ALIGN) * ALIGN
    if hi - lo > STAGE_BYTES:
        raise OSError(errno.EINVAL, "run larger than a staging buffer")
    try:
        dfd = os.open(path, os.O_RDONLY | O_DIRECT)
    except FileNotFoundError:  # gc dropped the pack since the lookup
        return None
    stage = stages.take()
    try:
        got = os.preadv(dfd, [stage.view[:hi - lo]], lo)
        if got < off + n - lo:
            return None
        buf[:] = stage.view[off - lo:off - lo + n]
    finally:
        stages.give(stage)
        os.close(dfd)
    return buf
