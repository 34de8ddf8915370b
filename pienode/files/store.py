"""``ChunkStore`` on disk: blocks in append-only pack files, located through a LevelDB index.

Owns: the bytes of every block this node holds, their durability, their verification on
read, pins, roots (files fully stored here) and garbage collection with compaction.

Layout under the store's directory (the node gives ``HOME/files/``):
- ``packs/NNNNNNNN.pack``: blocks appended back to back, no framing (the index knows
  where each one lies). One writer owns a pack at a time; finished packs go back to a pool
  until they reach ``pack_max`` bytes. Large sequential appends run at about twice the speed
  of one file per block on this machine (see benchmarks/files_bench.py and the issue note).
- ``index/``: a KVStore (LevelDB via ``pienode.storage.open_kv``) with
  ``B`` + digest -> (pack, offset, length); ``S`` + pack -> committed length;
  ``R`` + CID -> (file size, time added); ``P`` + CID -> pin; ``C`` + name -> counter.

Durability: a writer (``pienode.files.packs``: large writes go to disk with O_DIRECT, small
ones through the page cache) appends its blocks, then ``commit`` fsyncs the pack and writes
all the index entries, the pack's new committed length and the root in one synced batch.
Only then is anything visible. After a crash, bytes past a pack's committed length and packs
with no committed length are cut away on open, so a killed upload leaves nothing behind.

Must never: return a block whose sha2-256 does not match its CID, make a root visible
before all its blocks are durable, or import plyvel (only ``pienode.storage`` may).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pienode.errors import FileStoreError, NotFound
from pienode.files.cid import CID, DAG_PB
from pienode.files.dagpb import decode_node
from pienode.files.packs import LOC as _LOC
from pienode.directio import O_DIRECT, StagePool
from pienode.files.packs import DIRECT_READ_MIN, STAGE_POOL, PackWriter, read_run
from pienode.files.packs import ROOT as _ROOT
from pienode.files.packs import U64 as _U64
from pienode.files.packs import pack_name as _pack_name
from pienode.storage.kv import KVStore, WriteOps, open_kv


DEFAULT_PACK_MAX = 1 << 30
#: Largest single ``pread`` of back-to-back blocks in ``get_blocks`` (a read batch's worth).
READ_RUN_MAX = 4 << 20
#: gc keeps any root added less than this long ago: an upload precedes the transaction that
#: references it, so a fresh root is not garbage yet.
DEFAULT_GRACE_SECONDS = 24 * 3600.0


class BlockMissing(FileStoreError, NotFound):
    """This node has no copy of a block (a peer may have one)."""

    status = 404


class BlockDamaged(FileStoreError):
    """The stored copy of a block does not hash to its CID (disk damage); repair from a peer."""

    status = 500


@dataclass(frozen=True, slots=True)
class FileInfo:
    cid: str
    size: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    bytes_stored: int
    blocks: int
    roots: int
    pins: int
    packs: int
    pack_bytes: int
    chunks_repaired: int
    damaged_detected: int


@dataclass(frozen=True, slots=True)
class GcResult:
    blocks_removed: int
    bytes_removed: int
    packs_deleted: int
    packs_compacted: int
    roots_dropped: int


class PackStore:
    """The ``ChunkStore`` of a node: thread-safe; blocking (call it from worker threads)."""

    def __init__(
        self,
        directory: Path | str,
        *,
        kv: KVStore | None = None,
        pack_max: int = DEFAULT_PACK_MAX,
        direct: bool = True,
    ) -> None:
        """Args:
        direct: write large appends with O_DIRECT where the filesystem allows it (it
            switches itself off on the first EINVAL); False writes everything buffered.
        """
        self.directory = Path(directory)
        self._packs_dir = self.directory / "packs"
        self._packs_dir.mkdir(parents=True, exist_ok=True)
        self._kv = kv if kv is not None else open_kv(self.directory / "index")
        self._pack_max = pack_max
        self.direct = direct and O_DIRECT != 0
        self._stages = StagePool(STAGE_POOL)
        self._lock = threading.RLock()
        self._read_fds: dict[int, int] = {}
        self._retired_fds: list[int] = []
        self._pool: list[tuple[int, int, int]] = []  # (pack, fd, committed length)
        self._busy: set[int] = set()
        self._claims: dict[bytes, int] = {}  # digests that writers in flight rely on
        self._protected: dict[CID, int] = {}  # roots whose DAG is being fetched
        self._next_pack = 0
        self._blocks = 0
        self._bytes = 0
        self.chunks_repaired = int.from_bytes(self._kv.get(b"Crepaired") or b"", "big")
        self.damaged_detected = 0
        self._recover()

    # -- opening and crash recovery ---------------------------------------------------

    def _recover(self) -> None:
        committed: dict[int, int] = {}
        for key, value in self._kv.iterate(b"S"):
            committed[_U64.unpack(key[1:])[0]] = _U64.unpack(value)[0]
        for path in self._packs_dir.glob("*.pack"):
            try:
                pack = int(path.stem)
            except ValueError:
                continue
            self._next_pack = max(self._next_pack, pack + 1)
            if pack not in committed:
                path.unlink()  # a writer died before its first commit
                continue
            if path.stat().st_size > committed[pack]:
                with path.open("r+b") as f:  # bytes of a writer that died uncommitted
                    f.truncate(committed[pack])
                    os.fsync(f.fileno())
        for pack, length in committed.items():
            self._next_pack = max(self._next_pack, pack + 1)
            if length < self._pack_max and (self._packs_dir / _pack_name(pack)).exists():
                fd = os.open(self._packs_dir / _pack_name(pack), os.O_RDWR)
                self._pool.append((pack, fd, length))
        for _, value in self._kv.iterate(b"B"):
            self._blocks += 1
            self._bytes += _LOC.unpack(value)[2]

    # -- writing ----------------------------------------------------------------------

    def writer(self, *, fresh: bool = False) -> PackWriter:
        """A writer on a pack of its own (reused from the pool, or new if ``fresh``: gc
        compacts into a new pack so it never appends to a pack it may still drop)."""
        with self._lock:
            if self._pool and not fresh:
                pack, fd, length = self._pool.pop()
            else:
                pack = self._next_pack
                self._next_pack += 1
                fd = os.open(self._packs_dir / _pack_name(pack), os.O_RDWR | os.O_CREAT, 0o600)
                dfd = os.open(self._packs_dir, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
                length = 0
            self._busy.add(pack)
            return PackWriter(self, pack, fd, length, path=self._packs_dir / _pack_name(pack),
                              stages=self._stages, direct=self.direct)

    def _claim(self, digest: bytes) -> None:
        with self._lock:
            self._claims[digest] = self._claims.get(digest, 0) + 1

    def _unclaim_one(self, d: bytes) -> None:
        with self._lock:
            self._unclaim([d])

    def _unclaim(self, digests: Iterable[bytes]) -> None:
        for d in digests:
            n = self._claims.get(d, 0) - 1
            if n <= 0:
                self._claims.pop(d, None)
            else:
                self._claims[d] = n

    def _commit(self, w: PackWriter, ops: WriteOps, pending: dict[bytes, tuple[int, int]],
                root: CID | None) -> None:
        with self._lock:
            # A block may already be indexed (written with ``force``, or by a concurrent
            # writer since our dedup check): the new entry replaces it; count it once.
            for d in pending:
                old = self._kv.get(b"B" + d)
                if old is not None:
                    self._blocks -= 1
                    self._bytes -= _LOC.unpack(old)[2]
            self._kv.write(ops, sync=True)
            for _, n in pending.values():
                self._blocks += 1
                self._bytes += n
            self._release(w, pending)

    def _release(self, w: PackWriter, pending: dict[bytes, tuple[int, int]]) -> None:
        with self._lock:
            self._busy.discard(w.pack)
            self._unclaim(w._deduped)
            if w._end < self._pack_max:
                self._pool.append((w.pack, w._fd, w._end))
            else:
                os.close(w._fd)

    def put_block(self, cid: CID, data: bytes, *, replace: bool = False) -> None:
        """Verify and store one block durably; see ``put_blocks``."""
        self.put_blocks([(cid, data)], replace=replace)

    def put_blocks(self, blocks: Iterable[tuple[CID, bytes]], *, replace: bool = False) -> None:
        """Verify and store blocks (fetched from peers) with one fsync; ``replace`` writes a
        fresh copy even where the index has one (repair of a damaged copy).

        Raises:
            BlockDamaged: one of them does not match its CID; none is stored.
        """
        w = self.writer()
        try:
            for cid, data in blocks:
                if not cid.matches(data):
                    raise BlockDamaged("block does not match its CID", cid=str(cid))
                w.put(cid, data, force=replace)
            w.commit()
        finally:
            w.abort()

    def put_verified(self, blocks: Iterable[tuple[CID, bytes]], *, replace: bool = False) -> None:
        """``put_blocks`` for blocks the caller has just hashed against their CIDs (the
        exchange checks every block it receives): one hash per block per node is enough."""
        w = self.writer()
        try:
            for cid, data in blocks:
                w.put(cid, data, force=replace)
            w.commit()
        finally:
            w.abort()

    def add_root(self, root: CID, size: int) -> None:
        """Record ``root`` as a complete file here (its whole DAG must be stored)."""
        self._kv.put(b"R" + root.to_bytes(), _ROOT.pack(size, time.time()), sync=True)

    # -- reading ----------------------------------------------------------------------

    def has(self, cid: CID) -> bool:
        return self._kv.get(b"B" + cid.digest) is not None

    def block_size(self, cid: CID) -> int | None:
        loc = self._kv.get(b"B" + cid.digest)
        return None if loc is None else _LOC.unpack(loc)[2]

    def get_block(self, cid: CID) -> bytes:
        """The verified bytes of a block.

        Raises:
            BlockMissing: no copy here.
            BlockDamaged: the copy here does not hash to ``cid`` (or cannot be read).
        """
        loc = self._kv.get(b"B" + cid.digest)
        for _attempt in range(3):
            if loc is None:
                raise BlockMissing("block not stored here", cid=str(cid))
            data = self._read_at(*_LOC.unpack(loc))
            if data is not None and cid.matches(data):
                return data
            # gc may have moved the block (and dropped its old pack) since we looked it up.
            again = self._kv.get(b"B" + cid.digest)
            if again == loc:
                break
            loc = again
        with self._lock:
            self.damaged_detected += 1
        raise BlockDamaged("stored block is damaged", cid=str(cid))

    def get_blocks(self, cids: list[CID], *, verify: bool = True
                   ) -> tuple[list[bytes | memoryview | None], list[int]]:
        """The bytes of several blocks, read with one ``pread`` per run of blocks that lie
        back to back in a pack (a file's leaves do). Returns the blocks (None where missing
        or damaged) and the indices of the damaged ones.

        ``verify=False`` skips the hash check, for a caller that checks every byte against
        the CID itself (see ``GET /records/{id}/content``); lengths are still checked.
        A block that fails its check or its read goes through ``get_block`` (which tells a
        block gc moved from a damaged one, and counts damage).
        """
        locs: list[tuple[int, int, int] | None] = []
        for c in cids:
            raw = self._kv.get(b"B" + c.digest)
            locs.append(None if raw is None else _LOC.unpack(raw))
        out: list[bytes | memoryview | None] = [None] * len(cids)
        damaged: list[int] = []
        i = 0
        while i < len(cids):
            first = locs[i]
            if first is None:
                i += 1
                continue
            pack, start, n = first
            j, end = i + 1, start + n
            while j < len(cids) and end - start < READ_RUN_MAX:
                nxt = locs[j]
                if nxt is None or nxt[0] != pack or nxt[1] != end:
                    break
                j, end = j + 1, end + nxt[2]
            data = self._read_run(pack, start, end - start)
            view = memoryview(data) if data is not None else None
            for k in range(i, j):
                _, off, m = locs[k]  # type: ignore[misc]  # not None: in this run
                block = view[off - start:off - start + m] if view is not None else None
                if block is not None and (not verify or cids[k].matches(block)):
                    out[k] = block
                    continue
                try:
                    out[k] = self.get_block(cids[k])
                except BlockMissing:
                    pass
                except BlockDamaged:
                    damaged.append(k)
            i = j
        return out, damaged

    def spans(self, cids: list[CID]) -> list[tuple[Path, int, int]] | None:
        """Where the blocks lie, unread and unchecked: (pack file, offset, length) per run of
        blocks back to back in one pack; None if any is missing here. For a caller that
        checks every byte itself and sends the runs straight from the page cache."""
        out: list[tuple[Path, int, int]] = []
        last: tuple[int, int] | None = None  # pack and end of the current run
        for c in cids:
            raw = self._kv.get(b"B" + c.digest)
            if raw is None:
                return None
            pack, off, n = _LOC.unpack(raw)
            if last == (pack, off):
                path, start, length = out[-1]
                out[-1] = (path, start, length + n)
            else:
                out.append((self._packs_dir / _pack_name(pack), off, n))
            last = (pack, off + n)
        return out

    def _read_run(self, pack: int, off: int, n: int) -> bytes | bytearray | None:
        """A run of blocks: large ones past the page cache when it does not hold them."""
        if n < DIRECT_READ_MIN or not self.direct:
            return self._read_at(pack, off, n)
        fd = self._read_fd(pack)
        if fd is None:
            return None
        try:
            return read_run(fd, self._packs_dir / _pack_name(pack), off, n, self._stages)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                self.direct = False  # this filesystem refuses O_DIRECT: buffered from now on
            return self._read_at(pack, off, n)

    def _read_fd(self, pack: int) -> int | None:
        with self._lock:
            fd = self._read_fds.get(pack)
            if fd is None:
                try:
                    fd = os.open(self._packs_dir / _pack_name(pack), os.O_RDONLY)
                except FileNotFoundError:
                    return None
                self._read_fds[pack] = fd
            return fd

    def _read_at(self, pack: int, off: int, n: int) -> bytes | None:
        fd = self._read_fd(pack)
        if fd is None:
            return None
        try:
            data = os.pread(fd, n, off)
        except OSError:
            return None
        return data if len(data) == n else None

    def note_repaired(self, count: int = 1) -> None:
        with self._lock:
            self.chunks_repaired += count
            self._kv.put(b"Crepaired", self.chunks_repaired.to_bytes(8, "big"))

    def file_size(self, cid: CID) -> int:
        """Bytes of the file rooted at ``cid`` (from its root block alone)."""
        rec = self._kv.get(b"R" + cid.to_bytes())
        if rec is not None:
            return _ROOT.unpack(rec)[0]
        if cid.codec == DAG_PB:
            return decode_node(self.get_block(cid)).filesize
        n = self.block_size(cid)
        if n is None:
            raise BlockMissing("block not stored here", cid=str(cid))
        return n

    # -- roots and pins ---------------------------------------------------------------

    def has_root(self, cid: CID) -> bool:
        return self._kv.get(b"R" + cid.to_bytes()) is not None

    def roots(self) -> Iterator[tuple[CID, int, float]]:
        for key, value in self._kv.iterate(b"R"):
            size, added = _ROOT.unpack(value)
            yield CID.from_bytes(key[1:]), size, added

    def pin(self, cid: CID) -> None:
        self._kv.put(b"P" + cid.to_bytes(), b"", sync=True)

    def unpin(self, cid: CID) -> None:
        self._kv.delete(b"P" + cid.to_bytes(), sync=True)

    def pins(self) -> list[CID]:
        return [CID.from_bytes(k[1:]) for k, _ in self._kv.iterate(b"P")]

    def protect(self, root: CID) -> None:
        """Keep ``root``'s blocks from gc while a fetch of its DAG is under way."""
        with self._lock:
            self._protected[root] = self._protected.get(root, 0) + 1

    def unprotect(self, root: CID) -> None:
        with self._lock:
            n = self._protected.get(root, 0) - 1
            if n <= 0:
                self._protected.pop(root, None)
            else:
                self._protected[root] = n

    # -- stats, gc, close -------------------------------------------------------------

    def stats(self) -> StoreStats:
        with self._lock:
            packs = list(self._packs_dir.glob("*.pack"))
            return StoreStats(
                bytes_stored=self._bytes,
                blocks=self._blocks,
                roots=sum(1 for _ in self._kv.iterate(b"R")),
                pins=sum(1 for _ in self._kv.iterate(b"P")),
                packs=len(packs),
                pack_bytes=sum(p.stat().st_size for p in packs),
                chunks_repaired=self.chunks_repaired,
                damaged_detected=self.damaged_detected,
            )

    def gc(self, referenced: Iterable[str | CID], *, grace_seconds: float = DEFAULT_GRACE_SECONDS,
           compact_below: float = 0.5) -> GcResult:
        from pienode.files.gc import collect

        return collect(self, referenced, grace_seconds=grace_seconds, compact_below=compact_below)

    def close(self) -> None:
        with self._lock:
            for fd in list(self._read_fds.values()) + self._retired_fds:
                os.close(fd)
            for _, fd, _ in self._pool:
                os.close(fd)
            self._read_fds.clear()
            self._retired_fds.clear()
            self._pool.clear()
            self._stages.close()
            self._kv.close()
