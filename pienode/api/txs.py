"""Transaction submission shared by the aiohttp route and the lean front (``api.front``):
the body forms ``POST /txs`` accepts, admission, and waiting for commits.

Must never: answer differently depending on which of the two took the request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from pienode.api.render import jsonable, receipt_json
from pienode.errors import EncodingError, PieError, ValidationError

if TYPE_CHECKING:
    from pienode.runtime.node import Node


def json_object(body: bytes, what: str = "expected a JSON object") -> dict[str, Any]:
    """Parse a request body that must be one JSON object.

    Raises:
        EncodingError: malformed JSON, or not an object (``what`` says what was expected).
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EncodingError("malformed JSON") from None
    if not isinstance(doc, dict):
        raise EncodingError(what)
    return doc


def parse_txs_body(body: bytes, content_type: str) -> list[bytes]:
    """The transactions of a ``POST /txs`` body: one msgpack transaction, or JSON
    ``{"tx": base64}`` / ``{"txs": [base64, ...]}``.

    Raises:
        EncodingError: for anything else.
    """
    if not body:
        raise EncodingError("empty body: send one msgpack transaction or JSON {\"tx\": base64} / {\"txs\": [...]}")
    if len(body) > 9 and body.startswith(b'{"tx":"') and body.endswith(b'"}'):
        # The form clients send one transaction in, without the JSON parser: if the middle
        # is strict base64 it holds no quote or backslash, so the JSON was exactly this.
        try:
            return [base64.b64decode(body[7:-2], validate=True)]
        except (binascii.Error, ValueError):
            pass  # the general path below gives the error
    if content_type == "application/json" or body[:1] in (b"{", b"["):
        doc = json_object(body, "JSON body must be an object with 'tx' or 'txs'")
        items = doc.get("txs") if "txs" in doc else [doc.get("tx")]
        if not isinstance(items, list) or not items or len(items) > 1000:
            raise EncodingError("'txs' must be a list of 1 to 1000 base64 transactions")
        out = []
        for item in items:
            if not isinstance(item, str):
                raise EncodingError("each transaction must be a base64 string")
            try:
                out.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError):
                raise EncodingError("transaction is not valid base64") from None
        return out
    return [body]


async def submit_txs(node: "Node", datas: list[bytes], wait_arg: str, timeout_arg: str | None) -> tuple[int, Any]:
    """Admit ``datas`` and, if ``wait_arg`` asks, wait for their commits: (HTTP status, JSON
    document). Shared by the aiohttp route and the lean front (``api.front``).

    Raises:
        PieError: a single transaction refused (several: each refusal is listed instead).
    """
    wait = wait_arg in ("1", "true", "commit")
    ids: list[bytes] = []
    errors: list[dict[str, Any]] = []
    for data in datas:
        try:
            ids.append(node.admit(data))
        except PieError as exc:
            if len(datas) == 1:
                raise
            errors.append(jsonable(exc.to_json()))
    if not wait:
        if len(datas) == 1:
            return 202, {"tx_id": ids[0].hex(), "status": "pending"}
        return 202, {"tx_ids": [i.hex() for i in ids], "errors": errors}
    max_wait = node.cfg.api.max_wait_ms
    try:
        timeout = min(float(timeout_arg if timeout_arg is not None else max_wait), max_wait) / 1000
    except ValueError:
        raise ValidationError("timeout_ms must be a number") from None
    results = []
    # Wait for all of them at once: they commit together, mostly in the same block. One
    # transaction (the common case) is awaited directly, without a task around it.
    if len(ids) == 1:
        waits = [await node.wait_committed(ids[0], timeout)]
    else:
        waits = await asyncio.gather(*(node.wait_committed(tx_id, timeout) for tx_id in ids))
    for tx_id, done in zip(ids, waits):
        if done is None:
            results.append({"tx_id": tx_id.hex(), "status": "pending"})
        else:
            results.append({"tx_id": tx_id.hex(), "status": "committed", "height": done[0],
                            "receipt": receipt_json(done[1])})
    if len(datas) == 1:
        return (200 if results[0]["status"] == "committed" else 202), results[0]
    return 200, {"results": results, "errors": errors}
