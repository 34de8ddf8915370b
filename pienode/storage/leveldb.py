"""``KVStore`` on LevelDB: the only module in the project that imports plyvel.

Must never let ``close`` free the database under a call still running in another thread
(a node writes blocks from worker threads; a cancelled task does not stop its thread, and
plyvel would then touch freed memory): calls are counted in and out, and ``close`` waits for
them to finish; a call after ``close`` raises ``StorageError``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import plyvel

from pienode.errors import StorageError
from pienode.storage.kv import WriteOps


class LevelDBStore:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = plyvel.DB(
                str(path),
                create_if_missing=create,
                paranoid_checks=True,
                lru_cache_size=32 * 1024 * 1024,
                write_buffer_size=16 * 1024 * 1024,
                # Most reads on the transaction path miss (is this id committed yet?); a bloom
                # filter per table answers those without searching every level's index (a miss
                # 12.9 -> 6.5 us at 300k keys). Tables written without one still read fine.
                bloom_filter_bits=10,
                # No snappy: what we store is mostly signatures, keys, hashes and ciphertext
                # capsules, and compressing it in the background compaction thread cost ~5%
                # of a node's CPU under load (perf, issue 3). Tables written compressed
                # before still read fine (each block records its own compression).
                compression=None,
            )
        except plyvel.IOError as exc:
            raise StorageError(f"cannot open LevelDB at {path}: {exc}") from None
        except plyvel.CorruptionError as exc:
            raise StorageError(f"LevelDB at {path} is corrupt: {exc}") from None
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._busy = 0
        self._closed = False

    # Entry and exit are two plain methods around a try/finally rather than a
    # ``@contextmanager`` under a ``Condition``'s Python-level ``with``: every state read of
    # every transaction passes here, several times per transaction on every node (issue 3).
    def _enter(self) -> None:
        with self._lock:
            if self._closed:
                raise StorageError("the LevelDB store is closed")
            self._busy += 1

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            # Only ``close`` ever waits, and it sets ``_closed`` under this lock before it
            # does: notifying on every idle moment cost more than the read it ends.
            if self._closed and not self._busy:
                self._cv.notify_all()

    def get(self, key: bytes) -> bytes | None:
        self._enter()
        try:
            return self._db.get(key)
        finally:
            self._leave()

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._enter()
        try:
            self._db.put(key, value, sync=sync)
        finally:
            self._leave()

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._enter()
        try:
            self._db.delete(key, sync=sync)
        finally:
            self._leave()

    def write(self, ops: WriteOps, *, sync: bool = True) -> None:
        self._enter()
        try:
            with self._db.write_batch(sync=sync, transaction=True) as wb:
                put, delete = wb.put, wb.delete
                for key, value in ops.ops:
                    if value is None:
                        delete(key)
                    else:
                        put(key, value)
        finally:
            self._leave()

    def iterate(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        if prefix and start is None and stop is None:
            return self._db.iterator(prefix=prefix, reverse=reverse)
        lo = max(prefix, start) if start is not None else (prefix or None)
        hi = stop
        if prefix:
            bound = _prefix_end(prefix)
            hi = bound if hi is None or (bound is not None and bound < hi) else hi
        return self._db.iterator(start=lo, stop=hi, reverse=reverse)

    def close(self) -> None:
        """Close once every call under way has returned."""
        with self._cv:
            self._closed = True
            self._cv.wait_for(lambda: not self._busy)
        self._db.close()


def _prefix_end(prefix: bytes) -> bytes | None:
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return None
    b[-1] += 1
    return bytes(b)
