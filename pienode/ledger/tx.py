"""Signed transactions: the frozen record every node validates, orders and executes.

Wire form: the canonical msgpack map ``{v, chain, kind, sender, ts, body, sig}``. The
transaction id is SHA-256 over the same map without ``sig``; the signature covers those
unsigned bytes in the ``tx`` domain. A transaction id commits at most once (replay
protection lives in the ledger's state).

Design paper, Table 4 (EMR transaction): user IDs (sender, patient), timestamp, a
non-identifying summary, the content identifier and key capsule, the access policy and the
signature. Each ``kind`` gives its body schema in ``pienode.ledger.kinds``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pienode.crypto.keys import PrivateKey
from pienode.encoding import pack, pack_ordered, sha256, unpack
from pienode.errors import EncodingError, ValidationError

TX_VERSION = 1
TX_DOMAIN = "tx"
_KEYS = frozenset({"v", "chain", "kind", "sender", "ts", "body", "sig"})
#: A transaction id as text (``tx_id.hex()``): what contracts see as ``ctx.tx_id``, and so the
#: id of a re-key request, which is the id of the transaction that made it.
TX_ID_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Transaction:
    chain_id: str
    kind: str
    sender: str
    timestamp_ms: int
    body: dict[str, Any]
    signature: bytes = b""
    #: The unsigned encoding, computed once (it is hashed and verified several times).
    _unsigned: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_unsigned", pack(self.unsigned()))

    def unsigned(self) -> dict[str, Any]:
        return {
            "v": TX_VERSION,
            "chain": self.chain_id,
            "kind": self.kind,
            "sender": self.sender,
            "ts": self.timestamp_ms,
            "body": self.body,
        }

    def unsigned_bytes(self) -> bytes:
        return self._unsigned

    @property
    def tx_id(self) -> bytes:
        return sha256(self._unsigned)

    def encode(self) -> bytes:
        return pack({**self.unsigned(), "sig": self.signature})

    def signed(self, key: PrivateKey) -> "Transaction":
        sig = key.sign(TX_DOMAIN, self.unsigned_bytes())
        return Transaction(self.chain_id, self.kind, self.sender, self.timestamp_ms, self.body, sig)

    @classmethod
    def create(
        cls, key: PrivateKey, *, chain_id: str, kind: str, sender: str, timestamp_ms: int, body: dict[str, Any]
    ) -> "Transaction":
        return cls(chain_id, kind, sender, timestamp_ms, body).signed(key)

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int) -> "Transaction":
        """Parse wire bytes.

        Raises:
            EncodingError: not one canonical msgpack map of the right shape.
        """
        if len(data) > max_bytes:
            raise EncodingError(f"transaction too large ({len(data)} > {max_bytes} bytes)")
        obj = unpack(data, max_bytes=max_bytes)
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            raise EncodingError("transaction must be a map with keys " + ", ".join(sorted(_KEYS)))
        if obj["v"] != TX_VERSION:
            raise EncodingError(f"unsupported transaction version {obj['v']!r}")
        for name, typ in (("chain", str), ("kind", str), ("sender", str), ("body", dict), ("sig", bytes)):
            if not isinstance(obj[name], typ):
                raise EncodingError(f"transaction field {name!r} has the wrong type")
        ts = obj["ts"]
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise EncodingError("transaction field 'ts' must be a non-negative integer")
        if len(obj["kind"]) > 64 or len(obj["sender"]) > 128:
            raise EncodingError("transaction kind or sender too long")
        sig = obj.pop("sig")
        tx = object.__new__(cls)
        for name, value in (("chain_id", obj["chain"]), ("kind", obj["kind"]), ("sender", obj["sender"]),
                            ("timestamp_ms", ts), ("body", obj["body"]), ("signature", sig),
                            ("_unsigned", _unsigned_of(data, ts, sig) or pack_ordered(obj))):
            object.__setattr__(tx, name, value)
        return tx


def _uint_size(n: int) -> int:
    """Bytes of the canonical msgpack encoding of a non-negative int."""
    return 1 if n < 0x80 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _unsigned_of(data: bytes, ts: int, sig: bytes) -> bytes | None:
    """The unsigned encoding cut out of canonical wire bytes, or None if they are not laid
    out as expected (the caller then encodes it).

    The wire map's keys are in order (body, chain, kind, sender, sig, ts, v) and a strict
    decode proved it canonical, so the unsigned map is the same bytes with a 6-entry header
    and without the ``sig`` entry: no second encoding of the whole transaction (issue 3).
    """
    n = len(sig)
    sig_entry = 4 + (2 if n < 0x100 else 3 if n < 0x10000 else 5) + n  # "sig" key, bin header, bytes
    tail = 3 + _uint_size(ts) + 3  # "ts" key and value, "v" key and 1
    start = len(data) - tail - sig_entry
    if data[:1] != b"\x87" or start < 1 or data[start:start + 4] != b"\xa3sig":
        return None
    return b"\x86" + data[1:start] + data[start + sig_entry:]


_MISSING = object()


def require_fields(body: dict[str, Any], spec: dict[str, tuple[type | tuple[type, ...], bool]]) -> None:
    """Check ``body`` against ``{name: (types, required)}``; unknown fields are refused.

    A bool passes only where ``bool`` itself is listed (not merely ``int``).

    Raises:
        ValidationError: naming the first offending field.
    """
    if not body.keys() <= spec.keys():
        unknown = set(body) - set(spec)
        raise ValidationError(f"unknown body fields: {', '.join(sorted(unknown))}")
    for name, (types, required) in spec.items():
        v = body.get(name, _MISSING)
        if v is _MISSING:
            if required:
                raise ValidationError(f"missing body field {name!r}")
            continue
        if not isinstance(v, types) or (
            (v is True or v is False) and bool not in (types if isinstance(types, tuple) else (types,))
        ):
            raise ValidationError(f"body field {name!r} has the wrong type")
