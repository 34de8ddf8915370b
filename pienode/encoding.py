"""Canonical encoding and hashing: the bytes that get signed, hashed and stored.

Rules this module keeps:
- msgpack with maps sorted by key (keys are str), no floats anywhere, bin for bytes, str for
  text. Two equal values always encode to the same bytes, on every node.
- Every signature covers ``domain || 0x00 || payload`` so a signature made for one purpose
  (a transaction, a PBFT vote, a certificate) can never be replayed as another.
- Decoding is strict: a value that does not re-encode to the same bytes is refused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from pienode.errors import EncodingError

#: Upper bound on what ``unpack`` accepts, whatever a caller asks for.
MAX_DECODE_BYTES = 64 * 1024 * 1024


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        items = []
        for k in obj:
            if not isinstance(k, str):
                raise EncodingError(f"map keys must be str, not {type(k).__name__}")
            items.append(k)
        return {k: _canonical(obj[k]) for k in sorted(items)}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        raise EncodingError("floats are not allowed in canonical encoding")
    if obj is None or isinstance(obj, (bool, int, str, bytes)):
        return obj
    raise EncodingError(f"cannot encode {type(obj).__name__}")


def pack(obj: Any) -> bytes:
    """Encode ``obj`` canonically.

    Raises:
        EncodingError: for floats, non-str map keys or unsupported types.
    """
    try:
        return msgpack.packb(_canonical(obj), use_bin_type=True)
    except (OverflowError, ValueError) as exc:
        raise EncodingError(f"cannot encode: {exc}") from None


def unpack(data: bytes, *, max_bytes: int = MAX_DECODE_BYTES, strict: bool = True) -> Any:
    """Decode bytes produced by ``pack``.

    Args:
        data: the encoded bytes.
        max_bytes: refuse anything longer.
        strict: also refuse an encoding that is valid msgpack but not canonical.

    Raises:
        EncodingError: for anything that is not one canonical msgpack value.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError("expected bytes")
    if len(data) > max_bytes:
        raise EncodingError(f"encoded value too large ({len(data)} > {max_bytes} bytes)")
    try:
        obj = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise EncodingError(f"malformed msgpack: {type(exc).__name__}") from None
    if strict and pack(obj) != bytes(data):
        raise EncodingError("non-canonical encoding")
    return obj


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def digest(obj: Any) -> bytes:
    """SHA-256 of the canonical encoding of ``obj``."""
    return hashlib.sha256(pack(obj)).digest()


def signing_payload(domain: str, payload: bytes) -> bytes:
    """Domain-separated bytes to sign: ``b"pie/" + domain + b"\\x00" + payload``."""
    if "\x00" in domain:
        raise EncodingError("domain must not contain NUL")
    return b"pie/" + domain.encode("ascii") + b"\x00" + payload
