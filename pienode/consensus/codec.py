"""The encoding every PBFT message follows, and the strict checks of its fields.

Owns: canonical msgpack (``pack``; ``unpack`` refuses any bytes that are not exactly the
canonical encoding of what they hold, so a signature covers one meaning only), the size
limits of frames, ids and signatures, ``MessageError``, and the field checks decoders use.

Never: knows a message type, verifies a signature, or raises anything but ``MessageError``
on bad input.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pienode.encoding import packb
from pienode.errors import EncodingError

DIGEST_SIZE = 32
MAX_SIGNATURE = 128
MAX_ID = 256
MAX_FRAME = 64 * 1024 * 1024
#: Views, sequence numbers and timestamps stay far from the 64-bit limit of the encoding,
#: so ``view + 1`` and friends can never become unencodable.
MAX_UINT = 2**62


class MessageError(EncodingError):
    """Bytes that are not a well-formed PBFT message (the sender's fault)."""


def pack(obj: Any) -> bytes:
    """Canonical msgpack of a map-free value (what ``pienode.encoding.pack`` gives for it).

    Messages hold only lists, ints, bools, str and bytes, so the generic canonicaliser's
    walk (sorting maps, refusing floats) can be skipped on this hot path.
    """
    return packb(obj)


def unpack(data: bytes, max_bytes: int = MAX_FRAME) -> Any:
    """Strict decode: one msgpack value whose re-encoding is exactly ``data``.

    Raises:
        MessageError: for malformed or non-canonical bytes.
    """
    if type(data) is not bytes or len(data) > max_bytes:
        raise MessageError("expected bytes within the size limit")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        canonical = packb(obj) == data
    except Exception:  # msgpack raises several unrelated types
        raise MessageError("malformed msgpack") from None
    if not canonical or isinstance(obj, dict):
        raise MessageError("non-canonical encoding")
    return obj


def uint(x: Any, what: str) -> int:
    if type(x) is not int or not 0 <= x < MAX_UINT:
        raise MessageError(f"{what}: expected a non-negative int below 2**62")
    return x


def digest(x: Any, what: str = "digest") -> bytes:
    if type(x) is not bytes or len(x) != DIGEST_SIZE:
        raise MessageError(f"{what}: expected {DIGEST_SIZE} bytes")
    return x


def replica_id(x: Any) -> str:
    if type(x) is not str or not x or len(x) > MAX_ID:
        raise MessageError("replica id: expected a short non-empty str")
    return x


def as_list(x: Any, what: str) -> list[Any]:
    if type(x) is not list:
        raise MessageError(f"{what}: expected a list")
    return x
