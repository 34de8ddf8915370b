"""JSON views of ledger objects: bytes as hex, transactions decoded where they decode."""

from __future__ import annotations

from typing import Any

from pienode.errors import PieError
from pienode.ledger.block import Block, Receipt
from pienode.ledger.tx import Transaction


def jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def tx_json(data: bytes, max_bytes: int) -> dict[str, Any]:
    try:
        tx = Transaction.decode(data, max_bytes=max_bytes)
    except PieError as exc:
        return {"malformed": True, "error": exc.message, "size": len(data)}
    return {
        "tx_id": tx.tx_id.hex(),
        "kind": tx.kind,
        "sender": tx.sender,
        "timestamp_ms": tx.timestamp_ms,
        "body": jsonable(tx.body),
        "signature": tx.signature.hex(),
    }


def receipt_json(r: Receipt) -> dict[str, Any]:
    return jsonable(r.to_dict())


def block_json(block: Block, max_tx_bytes: int) -> dict[str, Any]:
    return {
        "hash": block.hash().hex(),
        "height": block.height,
        "header": jsonable(block.header.to_dict()),
        "txs": [tx_json(t, max_tx_bytes) for t in block.txs],
        "receipts": [receipt_json(r) for r in block.receipts],
        "certificate": block.certificate.hex(),
    }
