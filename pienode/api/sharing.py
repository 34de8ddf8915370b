"""HTTP routes of EMR sharing that need the node itself: key fragments, grants, accesses.

``POST /cfrags`` is where a hospital node turns its sealed key fragment into a capsule
fragment for a requester, and only when the chain shows, right now: a grant for this
requester and record, still granted and unexpired, for the record's current version, and a
committed ``record_access`` by the same requester, recent and granted. The fragment alone
opens nothing: the requester needs t = f+1 of them from different hospitals.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from pienode.api.render import jsonable
from pienode.encoding import unpack
from pienode.errors import EncodingError, Forbidden, NotFound, ValidationError
from pienode.ledger import keys
from pienode.ledger.sharing import access_prefix, grant_by_key, grant_key

#: How long a logged access entitles the requester to fragments.
ACCESS_VALID_MS = 10 * 60 * 1000


def _node(request: web.Request) -> Any:
    from pienode.api.app import NODE

    return request.app[NODE]


async def get_grant(request: web.Request) -> web.Response:
    node = _node(request)
    gid = node.ledger.state(grant_by_key(request.match_info["requester_id"], request.match_info["record_id"]))
    grant = None if gid is None else node.ledger.state(grant_key(gid))
    if grant is None:
        raise NotFound("no grant for this requester and record")
    return web.json_response(jsonable(grant))


async def get_accesses(request: web.Request) -> web.Response:
    node = _node(request)
    prefix = keys.STATE + access_prefix(request.match_info["record_id"])
    return web.json_response({"accesses": [jsonable(unpack(v)) for _, v in node.kv.iterate(prefix)]})


def _serve_fragment(node: Any, user: str, record_id: str, access_tx: bytes) -> dict[str, Any]:
    from pienode.crypto.grants import serve_fragment
    from pienode.crypto.pre import PrePublicKey

    ledger = node.ledger
    height = ledger.tx_height(access_tx)
    if height is None:
        raise Forbidden("log the access first: the record_access transaction is not committed")
    receipt = node.receipt_at(height, access_tx)
    block = ledger.block(height)
    tx = next((t for t in block.txs if _tx_id(t) == access_tx), None)
    if tx is None:
        raise Forbidden("access transaction not found")
    from pienode.ledger.tx import Transaction

    logged = Transaction.decode(tx, max_bytes=node.genesis.params.max_tx_bytes)
    if logged.kind != "record_access" or logged.sender != user or logged.body.get("record_id") != record_id:
        raise Forbidden("that access was logged by someone else or for another record")
    if not receipt.ok or (receipt.result or {}).get("status") != "granted":
        raise Forbidden(f"access refused: {(receipt.result or {}).get('reason') or receipt.error}")
    if time.time_ns() // 1_000_000 - block.header.timestamp_ms > ACCESS_VALID_MS:
        raise Forbidden("that access log is too old; log a new one")
    gid = ledger.state(grant_by_key(user, record_id))
    grant = None if gid is None else ledger.state(grant_key(gid))
    rec = ledger.state(keys.record_key(record_id))
    if grant is None or rec is None or grant["grant_id"] != receipt.result.get("grant_id"):
        raise Forbidden("no grant for this record")
    if grant["version"] != rec["version"]:
        raise Forbidden("the record was re-keyed after the grant")
    status = node.contract_status(grant["request_id"])
    if status is None or status.get("status") != "granted":
        raise Forbidden(f"the grant is {status.get('status') if status else 'unknown'}")
    requester = ledger.state(keys.user_key(user))
    index = node.genesis.node_ids.index(node.node_id)
    cfrag = serve_fragment(
        node.enc_key, index, grant["kfrags"][index], grant["grant_id"], rec["capsule"],
        delegating_pk=PrePublicKey.from_bytes(rec["delegating_key"]),
        requester_pk=PrePublicKey.from_bytes(requester["enc_key"]),
        verifying_pk=PrePublicKey.from_bytes(rec["verifying_key"]),
    )
    return {"node_id": node.node_id, "node_index": index, "cfrag": cfrag.hex(), "version": rec["version"]}


def _tx_id(data: bytes) -> bytes:
    from pienode.ledger.tx import Transaction

    try:
        return Transaction.decode(data, max_bytes=1 << 20).tx_id
    except Exception:
        return b""


async def post_cfrag(request: web.Request) -> web.Response:
    node = _node(request)
    body = await request.read()
    user = node.request_verifier.verify(request.headers, request.method, request.path_qs, body, node.user_key)
    try:
        doc = json.loads(body)
        record_id, access_tx = doc["record_id"], bytes.fromhex(doc["access_tx"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise EncodingError("expected {\"record_id\": ..., \"access_tx\": hex}") from None
    if not isinstance(record_id, str) or len(access_tx) != 32:
        raise ValidationError("bad record_id or access_tx")
    out = await asyncio.to_thread(_serve_fragment, node, user, record_id, access_tx)
    return web.json_response(out)


def add_sharing_routes(app: web.Application) -> None:
    app.router.add_get("/grants/{requester_id}/{record_id}", get_grant)
    app.router.add_get("/records/{record_id}/accesses", get_accesses)
    app.router.add_post("/cfrags", post_cfrag)
