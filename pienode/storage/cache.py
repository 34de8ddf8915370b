"""``CachedKV``: a read cache in front of a ``KVStore`` for the keys under one prefix.

The ledger reads the same committed state keys again and again: a sender's certificate at
admission and again at execution, "is this transaction id committed?" at admission, at
execution and when a client waits for it (issue 3). Those reads cost a LevelDB lookup each.
This wrapper remembers what a read of a key under ``prefix`` returned, including "absent".

It stays correct because every write to the store goes through this object: a write (or a
batch) is applied to the store first, then, under the lock, each written key's entry is
replaced by the value written (or dropped if the value is large) and the generation moves
on. A read that missed fills the cache only if no write finished between its look-up and
its fill (same generation), so a value read just before a write can never be left behind
after it. Nothing is persisted: after a restart the cache starts empty.

Never: caches iteration, or anything outside ``prefix``; holds its lock across store I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from pienode.storage.kv import KVStore, WriteOps

#: Entries kept before the cache is emptied and starts over (the hot set, certificates of
#: active users, refills within a block or two).
DEFAULT_MAX_ENTRIES = 100_000
#: Values longer than this are not cached: a write drops the entry instead of replacing it,
#: a read leaves none (records and contract code are rarely read on the transaction path).
DEFAULT_MAX_VALUE = 512

_MISSING = object()


class CachedKV:
    """``KVStore`` wrapper caching point reads under ``prefix`` (write-through)."""

    def __init__(self, inner: KVStore, prefix: bytes, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_value: int = DEFAULT_MAX_VALUE) -> None:
        self.inner = inner
        self._prefix = prefix
        self._max_entries = max_entries
        self._max_value = max_value
        self._items: dict[bytes, bytes | None] = {}
        self._lock = threading.Lock()
        self._gen = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> bytes | None:
        if not key.startswith(self._prefix):
            return self.inner.get(key)
        # A dict read is atomic under the GIL; only fills and invalidations take the lock.
        found = self._items.get(key, _MISSING)
        if found is not _MISSING:
            self.hits += 1
            return found  # type: ignore[return-value]
        self.misses += 1
        gen = self._gen
        value = self.inner.get(key)
        if value is not None and len(value) > self._max_value:
            return value  # records and contract code: read rarely, and large
        with self._lock:
            if gen == self._gen:
                if len(self._items) >= self._max_entries:
                    self._items.clear()
                self._items[bytes(key)] = value
        return value

    def _written(self, pairs: list[tuple[bytes, bytes | None]], *, failed: bool = False) -> None:
        """Bring the entries of keys just written up to date (or, after a failed write,
        whose outcome we do not trust, forget them); the caller holds no lock."""
        prefix, items, limit = self._prefix, self._items, self._max_value
        with self._lock:
            for key, value in pairs:
                if key.startswith(prefix) and key in items:
                    if not failed and (value is None or len(value) <= limit):
                        items[key] = value
                    else:
                        del items[key]
            self._gen += 1

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._apply([(key, value)], lambda: self.inner.put(key, value, sync=sync))

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._apply([(key, None)], lambda: self.inner.delete(key, sync=sync))

    def write(self, ops: WriteOps, *, sync: bool = True) -> None:
        self._apply(ops.ops, lambda: self.inner.write(ops, sync=sync))

    def _apply(self, pairs: list[tuple[bytes, bytes | None]], do: Callable[[], None]) -> None:
        try:
            do()
        except BaseException:
            self._written(pairs, failed=True)
            raise
        self._written(pairs)

    def iterate(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.inner.iterate(prefix, start=start, stop=stop, reverse=reverse)

    def close(self) -> None:
        self.inner.close()

    def __len__(self) -> int:
        return len(self._items)
