"""World state as seen while executing one block: committed state plus this block's writes.

Reads fall through to the committed ``S`` keyspace of the node's store; writes stay in the
overlay until the block commits in one synced batch. ``savepoint``/``rollback`` let a failed
transaction leave no trace while the block goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pienode.encoding import pack, unpack
from pienode.ledger import keys
from pienode.storage.kv import KVStore


class StateOverlay:
    def __init__(self, kv: KVStore) -> None:
        self._kv = kv
        self.writes: dict[bytes, bytes | None] = {}
        self._undo: list[dict[bytes, tuple[bool, bytes | None]]] = []

    # -- raw bytes -----------------------------------------------------------------------

    def get_raw(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self._kv.get(keys.STATE + key)

    def put_raw(self, key: bytes, value: bytes | None) -> None:
        if self._undo:
            frame = self._undo[-1]
            if key not in frame:
                frame[key] = (key in self.writes, self.writes.get(key))
        self.writes[key] = value

    def put_many_raw(self, keys: list[bytes], value: bytes | None) -> None:
        """``put_raw(key, value)`` for each key (the record indexes: several per upload)."""
        writes = self.writes
        if self._undo:
            frame = self._undo[-1]
            for key in keys:
                if key not in frame:
                    frame[key] = (key in writes, writes.get(key))
        for key in keys:
            writes[key] = value

    def scan_raw(self, prefix: bytes, start_after: bytes | None = None, limit: int = 100) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` live items under ``prefix`` with key > ``start_after``, merged."""
        out: dict[bytes, bytes | None] = {}
        start = keys.STATE + (start_after + b"\x00" if start_after is not None else prefix)
        it: Iterator[tuple[bytes, bytes]] = self._kv.iterate(keys.STATE + prefix, start=start)
        for k, v in it:
            out[k[1:]] = v
            if len(out) >= limit + len(self.writes):
                break
        for k, v in self.writes.items():
            if k.startswith(prefix) and (start_after is None or k > start_after):
                out[k] = v
        items = [(k, v) for k, v in sorted(out.items()) if v is not None]
        return items[:limit]

    # -- decoded values ------------------------------------------------------------------

    def get(self, key: bytes) -> Any:
        raw = self.get_raw(key)
        return None if raw is None else unpack(raw)

    def put(self, key: bytes, value: Any) -> None:
        self.put_raw(key, pack(value))

    def delete(self, key: bytes) -> None:
        self.put_raw(key, None)

    def exists(self, key: bytes) -> bool:
        return self.get_raw(key) is not None

    # -- transactions within the block ---------------------------------------------------

    def savepoint(self) -> None:
        self._undo.append({})

    def release(self) -> None:
        frame = self._undo.pop()
        if self._undo:
            parent = self._undo[-1]
            for k, old in frame.items():
                parent.setdefault(k, old)

    def rollback(self) -> None:
        frame = self._undo.pop()
        for k, (existed, old) in frame.items():
            if existed:
                self.writes[k] = old
            else:
                self.writes.pop(k, None)
