"""Blocks: header, ordered transactions, receipts and the PBFT commit certificate.

The block hash is SHA-256 over the canonical header. The header commits to the previous
block (hash chain), the transactions (Merkle root over each transaction's SHA-256), the
receipts (Merkle root) and the state after execution (``state_root``, a hash chain over each
block's sorted write set, so replaying the chain reproduces it exactly). The commit
certificate signs the batch digest that PBFT ordered; it lives beside the header, not in it,
because it is produced after the header's contents are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pienode.encoding import canonical, join_array, join_map, pack, pack_ordered, sha256, unpack
from pienode.errors import EncodingError

ZERO_HASH = bytes(32)


def merkle_root(leaves: list[bytes]) -> bytes:
    """Binary Merkle root with domain-separated leaves and nodes (RFC 6962 style)."""
    if not leaves:
        return sha256(b"")
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            nxt.append(sha256(b"\x01" + level[i] + level[i + 1]))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_id: bytes
    ok: bool
    code: str = "ok"
    error: str = ""
    result: Any = None
    events: tuple[tuple[str, Any], ...] = ()
    #: The canonical encoding, made once: the receipts root and the stored block both use it.
    _encoded: bytes = field(default=b"", init=False, repr=False, compare=False)

    def encode(self) -> bytes:
        """``pack(self.to_dict())``, made once. The map is built with its keys already in
        order, so only the contract-made parts (result, events) need the canonical walk."""
        if not self._encoded:
            object.__setattr__(self, "_encoded", pack_ordered({
                "code": self.code,
                "error": self.error,
                "events": [[n, canonical(d)] for n, d in self.events],
                "ok": self.ok,
                "result": canonical(self.result),
                "tx_id": self.tx_id,
            }))
        return self._encoded

    def to_dict(self) -> dict[str, Any]:
        return {
            "tx_id": self.tx_id,
            "ok": self.ok,
            "code": self.code,
            "error": self.error,
            "result": self.result,
            "events": [[n, d] for n, d in self.events],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Receipt":
        return cls(d["tx_id"], d["ok"], d["code"], d["error"], d["result"], tuple((n, e) for n, e in d["events"]))


@dataclass(frozen=True, slots=True)
class BlockHeader:
    chain_id: str
    height: int
    prev_hash: bytes
    timestamp_ms: int
    proposer: str
    view: int
    batch_digest: bytes
    tx_root: bytes
    receipts_root: bytes
    state_root: bytes
    tx_count: int
    #: The canonical encoding and the hash, made once: a header is hashed several times per
    #: block (prev_hash of the next, the head check, the checkpoint digest, /status).
    _encoded: bytes = field(default=b"", init=False, repr=False, compare=False)
    _hash: bytes = field(default=b"", init=False, repr=False, compare=False)

    def encode(self) -> bytes:
        if not self._encoded:
            object.__setattr__(self, "_encoded", pack(self.to_dict()))
        return self._encoded

    def hash(self) -> bytes:
        if not self._hash:
            object.__setattr__(self, "_hash", sha256(self.encode()))
        return self._hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "prev_hash": self.prev_hash,
            "timestamp_ms": self.timestamp_ms,
            "proposer": self.proposer,
            "view": self.view,
            "batch_digest": self.batch_digest,
            "tx_root": self.tx_root,
            "receipts_root": self.receipts_root,
            "state_root": self.state_root,
            "tx_count": self.tx_count,
        }


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: tuple[bytes, ...]
    receipts: tuple[Receipt, ...]
    certificate: bytes = b""

    @property
    def height(self) -> int:
        return self.header.height

    def hash(self) -> bytes:
        return self.header.hash()

    def encode(self) -> bytes:
        """``pack({"header", "txs", "receipts", "cert"})``, joined from parts already
        encoded (each receipt once) rather than walking the whole block again."""
        return join_map(
            {
                "header": self.header.encode(),
                "txs": pack(list(self.txs)),
                "receipts": join_array([r.encode() for r in self.receipts]),
                "cert": pack(self.certificate),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> "Block":
        try:
            d = unpack(data)
            header = BlockHeader(**d["header"])
            return cls(
                header,
                tuple(d["txs"]),
                tuple(Receipt.from_dict(r) for r in d["receipts"]),
                d["cert"],
            )
        except EncodingError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise EncodingError(f"malformed block: {exc}") from None


def receipts_root(receipts: tuple[Receipt, ...] | list[Receipt]) -> bytes:
    return merkle_root([r.encode() for r in receipts])


def tx_root(txs: tuple[bytes, ...] | list[bytes]) -> bytes:
    return merkle_root([sha256(t) for t in txs])


def next_state_root(prev_root: bytes, writes: dict[bytes, bytes | None]) -> bytes:
    """Chain the block's write set (sorted by key, deletes as nil) onto the previous root."""
    # Keys are bytes and values bytes or nil: no maps, so already canonical. Pairs are packed
    # as tuples (msgpack arrays, the same bytes as lists); keys are distinct, so the sort
    # never compares two values.
    ws = pack_ordered(sorted(writes.items()))
    return sha256(prev_root + sha256(ws))
