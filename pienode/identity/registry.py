"""The registering hospital's private registry: pseudonymous user id -> the person's name.

It lives under the ``P`` prefix of the hospital's own store, never on the chain and never
sent to a peer. Each entry carries a SHA-256 checksum so ``pienode verify`` notices a
damaged byte.
"""

from __future__ import annotations

from typing import Any

from pienode.encoding import pack, sha256, unpack
from pienode.errors import StorageError
from pienode.ledger import keys
from pienode.storage.kv import KVStore


def _key(user_id: str) -> bytes:
    return keys.PRIVATE + b"u/" + user_id.encode()


def put_identity(kv: KVStore, user_id: str, name: str, role: str, registered_at_ms: int) -> None:
    entry = pack({"user_id": user_id, "name": name, "role": role, "registered_at_ms": registered_at_ms})
    kv.put(_key(user_id), sha256(entry) + entry, sync=True)


def get_identity(kv: KVStore, user_id: str) -> dict[str, Any] | None:
    raw = kv.get(_key(user_id))
    return None if raw is None else decode_entry(raw)


def decode_entry(raw: bytes) -> dict[str, Any]:
    if len(raw) < 32 or sha256(raw[32:]) != raw[:32]:
        raise StorageError("private registry entry fails its checksum")
    return unpack(raw[32:])
