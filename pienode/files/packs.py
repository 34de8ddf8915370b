"""Pack file I/O: ``PackWriter`` (appending blocks) and large reads that bypass the page
cache (``read_run``).

Owns: how a writer's bytes reach its pack and the disk, and how a large run is read back.
``pienode.files.store`` owns the index, the pool of packs, reads and gc; this module never
touches the index itself (the store's ``_commit`` does, after the fsync here).

How bytes are written: a writer appends through a ``pienode.directio.Appender`` from its
pack's committed end (staging buffers from a small pool the store keeps, so their pages stay
warm): a writer that fills its 8 MiB buffer writes with O_DIRECT, its last partial page
padded, then the pack cut back to its true end; one that never fills it writes buffered,
once, at commit, so its bytes stay in the page cache for a read right after (a download of
a file just uploaded). Where O_DIRECT is refused (EINVAL: tmpfs, odd block sizes), the
store switches to buffered writes for good: one ``pwrite`` per staging buffer, write-back
started every 16 MiB (``sync_file_range``). Either way the pack is fsynced at commit.

Reads go through the store's buffered fds: Linux keeps O_DIRECT writes and the page cache
coherent (a direct write drops the cached pages it covers). A large run that is not in the
page cache (a file a large writer put there) is read with O_DIRECT into a staging buffer
(``read_run``): filling the page cache would cost the same fresh pages as writing through it
did (1 GiB: 0.1-2.1 CPU-s of system time buffered, 0.08 direct).

Must never: change a committed byte of a pack, or let a block be indexed before the fsync
that makes it durable (``commit`` fsyncs, then hands the index entries to the store).
"""

from __future__ import annotations

import errno
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pienode.buffers import scratch
from pienode.directio import ALIGN, O_DIRECT, STAGE_BYTES, Appender, ShortFile, StagePool
from pienode.errors import FileStoreError
from pienode.files.cid import CID
from pienode.storage.kv import WriteOps

if TYPE_CHECKING:
    from pienode.files.store import PackStore

__all__ = ["STAGE_POOL", "DIRECT_READ_MIN", "LOC", "ROOT", "U64", "PackWriter", "pack_name", "read_run"]

LOC = struct.Struct(">IQI")  # pack, offset, length
ROOT = struct.Struct(">Qd")  # file size, unix time added
U64 = struct.Struct(">Q")

#: Staging buffers the store keeps for reuse (an upload, a push session, an exchange batch, gc).
STAGE_POOL = 4
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
#: Runs read back of at least this many bytes try the page cache without waiting, then the
#: disk with O_DIRECT (``read_run``); smaller ones use a plain buffered ``pread``.
DIRECT_READ_MIN = 1 << 20


def pack_name(pack: int) -> str:
    return f"{pack:08d}.pack"


class PackWriter:
    """Appends blocks to one pack; nothing is visible until ``commit``. Not thread-safe:
    one upload (or one exchange batch) uses one writer from one thread at a time. Its bytes
    go through a ``directio.Appender`` from the pack's committed end."""

    def __init__(self, store: "PackStore", pack: int, fd: int, start: int, *,
                 path: Path, stages: StagePool, direct: bool) -> None:
        self._store = store
        self.pack = pack
        self._fd = fd
        self._start = start
        self._end = start
        self._out = Appender(fd, path, start, stages, direct=direct, writeback=True,
                             on_refused=self._refused)
        self._pending: dict[bytes, tuple[int, int]] = {}
        self._deduped: set[bytes] = set()
        self.closed = False

    @property
    def wrote_direct(self) -> bool:
        return self._out.wrote_direct

    def _refused(self) -> None:
        # This filesystem or device refuses O_DIRECT: the store's later writers write buffered.
        self._store.direct = False

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
        n = memoryview(data).nbytes
        try:
            self._out.write(data)
        except ShortFile:
            raise FileStoreError("pack is shorter than its committed length", pack=self.pack) from None
        self._pending[d] = (self._end, n)
        self._end += n

    @property
    def bytes_written(self) -> int:
        return self._end - self._start

    def commit(self, root: CID | None = None, size: int = 0) -> None:
        """Make the blocks durable, then visible, together with ``root`` if given."""
        if self.closed:
            raise FileStoreError("writer is closed")
        try:
            self._out.finish()
        except ShortFile:
            raise FileStoreError("pack is shorter than its committed length", pack=self.pack) from None
        if self._end > self._start:
            os.fsync(self._fd)
        self._out.close()
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
        self._out.close()
        self._store._release(self, self._pending)

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
