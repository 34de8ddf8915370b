"""The ``KVStore`` port and its in-memory twin.

A store is an ordered map of bytes to bytes with atomic batches. Every state change of a
block goes through one ``Batch`` committed with ``sync=True``, so a crash leaves the whole
batch or none of it. Subsystems share one store by giving each its own key prefix (see
``pienode.ledger.keys`` for the ledger's layout).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class Batch(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...


class KVStore(Protocol):
    """Ordered bytes-to-bytes map with atomic, optionally synced, batches."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None: ...

    def delete(self, key: bytes, *, sync: bool = False) -> None: ...

    def write(self, ops: "WriteOps", *, sync: bool = True) -> None:
        """Apply every put and delete in ``ops`` atomically."""
        ...

    def iterate(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order, within [start, stop)."""
        ...

    def close(self) -> None: ...


class WriteOps:
    """An ordered list of puts and deletes, applied as one atomic write."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((bytes(key), bytes(value)))

    def delete(self, key: bytes) -> None:
        self.ops.append((bytes(key), None))

    def __len__(self) -> int:
        return len(self.ops)


class MemoryKV:
    """``KVStore`` in memory, for tests and the consensus simulator."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def _put(self, key: bytes, value: bytes) -> None:
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = value

    def _delete(self, key: bytes) -> None:
        if key in self._data:
            del self._data[key]
            i = bisect.bisect_left(self._keys, key)
            del self._keys[i]

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        with self._lock:
            self._put(bytes(key), bytes(value))

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        with self._lock:
            self._delete(bytes(key))

    def write(self, ops: WriteOps, *, sync: bool = True) -> None:
        with self._lock:
            for key, value in ops.ops:
                if value is None:
                    self._delete(key)
                else:
                    self._put(key, value)

    def iterate(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        lo = max(prefix, start) if start is not None else prefix
        with self._lock:
            i = bisect.bisect_left(self._keys, lo)
            keys = []
            while i < len(self._keys):
                k = self._keys[i]
                if not k.startswith(prefix) or (stop is not None and k >= stop):
                    break
                keys.append(k)
                i += 1
            items = [(k, self._data[k]) for k in keys]
        if reverse:
            items.reverse()
        return iter(items)

    def close(self) -> None:
        pass


def open_kv(path: Path | str | None) -> KVStore:
    """A LevelDB store at ``path``, or an in-memory one if ``path`` is None."""
    if path is None:
        return MemoryKV()
    from pienode.storage.leveldb import LevelDBStore

    return LevelDBStore(Path(path))
