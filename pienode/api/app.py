"""The node's HTTP API (aiohttp). Errors map to HTTP in one place: ``error_middleware``.

Reads of chain data are open to consortium members. ``POST /txs`` carries its own
signature. Registration is the hospital acting as its users' certificate authority.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pienode.api.download import add_download_routes
from pienode.api.front import Front
from pienode.api.render import block_json, jsonable, receipt_json
from pienode.api.sharing import add_sharing_routes
from pienode.api.txs import json_object, parse_txs_body, submit_txs
from pienode.crypto.keys import PublicKey
from pienode.encoding import unpack
from pienode.errors import Forbidden, NotFound, PieError, ValidationError
from pienode.execution import Caller
from pienode.files.http import RESPONSE_STARTED, add_file_admin_routes, add_file_routes
from pienode.ledger import keys
from pienode.ledger.contracts import read_only_call
from pienode.runtime.node import Node

log = logging.getLogger("pienode.api")
NODE: web.AppKey[Node] = web.AppKey("node", Node)
OPENAPI = Path(__file__).with_name("openapi.json")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


LOOPBACK = ("127.", "::1", "::ffff:127.")


def is_local(request: web.Request) -> bool:
    if not request.app[NODE].cfg.api.trust_loopback:
        return False
    peer = request.remote or ""
    return peer.startswith(LOOPBACK)


class Behind(PieError):
    status = 503


async def _wait_min_height(node: Node, want: str) -> None:
    """``X-Pie-Min-Height: N``: answer only once this node has committed height N (bounded
    wait), so a client reading from one hospital sees what it committed through another."""
    try:
        height = int(want)
    except ValueError:
        raise ValidationError("X-Pie-Min-Height must be an integer") from None
    if height > node.ledger.height and not await node.wait_height(height, 10.0):
        raise Behind(f"this node has not reached height {height} yet; try again", height=height)


def _files_auth(request: web.Request, node: Node) -> None:
    """File transfers: open to the node's own host and to requests signed by registered users;
    the store's housekeeping (list, stat, pin, gc, verify) to the node's own host only."""
    if is_local(request):
        return
    path = request.path
    if path == "/files" and request.method == "GET" or path.count("/") > 2 or path in ("/files/gc", "/files/verify"):
        raise Forbidden("file store housekeeping is for the node's operator (its own host)")
    node.request_verifier.verify(request.headers, request.method, request.path_qs, None, node.user_key)


def make_middleware(node: Node) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The one middleware every request passes through: errors to HTTP (the only place they
    are mapped), the consistency header, file-transfer auth, and the per-status counter.

    One middleware rather than three, and the counter's children looked up once per status
    rather than through ``labels()`` per request: ``POST /txs`` under load pays for this on
    every transaction (issue 3). The header and ``/files`` checks run only when they apply.
    """
    counters: dict[int, Any] = {}
    api_requests = node.metrics.api_requests

    def count(status: int) -> None:
        child = counters.get(status)
        if child is None:
            child = counters[status] = api_requests.labels(str(status))
        child.inc()

    @web.middleware
    async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            want = request.headers.get("X-Pie-Min-Height")
            if want:
                await _wait_min_height(node, want)
            if request.path.startswith("/files"):
                _files_auth(request, node)
            resp = await handler(request)
        except web.HTTPException as exc:
            count(exc.status)
            if exc.status >= 400 and exc.content_type != "application/json":
                return web.json_response({"error": exc.reason}, status=exc.status)
            raise
        except PieError as exc:
            count(exc.status)
            if request.get(RESPONSE_STARTED):
                raise  # the body is half sent: aiohttp cuts the connection, the client sees a failure
            if exc.status >= 500:
                log.warning("%s %s failed: %s", request.method, request.path, exc.message)
            return web.json_response(jsonable(exc.to_json()), status=exc.status)
        except Exception:
            count(500)
            log.exception("internal error on %s %s", request.method, request.path)
            return web.json_response({"error": "internal error"}, status=500)
        count(resp.status)
        return resp

    return api_middleware


def _hex(value: str, what: str, size: int | None = None) -> bytes:
    try:
        out = bytes.fromhex(value)
    except ValueError:
        raise ValidationError(f"{what} must be hex") from None
    if size is not None and len(out) != size:
        raise ValidationError(f"{what} must be {size} bytes")
    return out


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    r = node.driver.replica
    head = node.ledger.head
    peers = sorted(node.net.connected_peers()) if node.net else []
    return web.json_response(
        {
            "node_id": node.node_id,
            "chain_id": node.genesis.chain_id,
            "height": head.height,
            "last_block_hash": head.hash().hex(),
            "last_block_time_ms": head.timestamp_ms,
            "view": r.view,
            "primary": r.primary,
            "peers_connected": len(peers),
            "peers": peers,
            "checkpoint": r.stable_checkpoint,
            "mempool": len(node.mempool),
            "nodes": len(node.genesis.nodes),
            "f": node.genesis.f,
            "uptime_s": round(time.monotonic() - node.started_at, 1),
            "pid": os.getpid(),
            "consensus": {"discarded": dict(r.stats), "pending_requests": r.pending_count,
                          "last_delivered": r.last_delivered_seq, "low_watermark": r.low_watermark},
        }
    )


async def get_block(request: web.Request) -> web.Response:
    node = request.app[NODE]
    try:
        height = int(request.match_info["height"])
    except ValueError:
        raise ValidationError("height must be an integer") from None
    block = node.ledger.block(height) if height >= 0 else None
    if block is None:
        raise NotFound(f"no block at height {height}", height=height)
    return web.json_response(block_json(block, node.genesis.params.max_tx_bytes))


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.net is not None:
        up = node.net.connected_peers()
        node.metrics.peers.set(len(up))
        for n in node.genesis.node_ids:
            if n != node.node_id:
                node.metrics.peer_up.labels(n).set(1 if n in up else 0)
        node.metrics.peer_bad_frames.set(getattr(node.net.stats, "bad_frames", 0))
    resp = web.Response(body=generate_latest(node.metrics.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def _read_txs(request: web.Request) -> list[bytes]:
    node = request.app[NODE]
    limit = node.cfg.api.max_tx_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return parse_txs_body(body, request.content_type)


async def post_txs(request: web.Request) -> web.Response:
    node = request.app[NODE]
    datas = await _read_txs(request)
    status, doc = await submit_txs(node, datas, request.query.get("wait", ""), request.query.get("timeout_ms"))
    return web.json_response(doc, status=status)


async def get_tx(request: web.Request) -> web.Response:
    node = request.app[NODE]
    tx_id = _hex(request.match_info["tx_id"], "tx id", 32)
    wait_ms = min(int(request.query.get("wait_ms", "0") or 0), node.cfg.api.max_wait_ms)
    if wait_ms > 0 and tx_id in node.mempool:
        await node.wait_committed(tx_id, wait_ms / 1000)
    height = node.ledger.tx_height(tx_id)
    if height is None:
        if tx_id in node.mempool:
            return web.json_response({"tx_id": tx_id.hex(), "status": "pending"})
        raise NotFound("unknown transaction", tx_id=tx_id.hex())
    return web.json_response({"tx_id": tx_id.hex(), "status": "committed", "height": height,
                              "receipt": receipt_json(node.receipt_at(height, tx_id))})


async def register(request: web.Request) -> web.Response:
    node = request.app[NODE]
    doc = json_object(await request.read())
    for f in ("role", "name", "sign_key", "enc_key"):
        if not isinstance(doc.get(f), str):
            raise ValidationError(f"field {f!r} is required")
    sign_key = PublicKey.from_bytes(_hex(doc["sign_key"], "sign_key", 33))
    enc_key = PublicKey.from_bytes(_hex(doc["enc_key"], "enc_key", 33))
    out = await node.register_user(role=doc["role"], name=doc["name"], sign_key=sign_key.data, enc_key=enc_key.data)
    return web.json_response(jsonable(out), status=201)


def _state_json(request: web.Request, key: bytes, what: str) -> web.Response:
    value = request.app[NODE].ledger.state(key)
    if value is None:
        raise NotFound(f"unknown {what}")
    return web.json_response(jsonable(value))


async def get_user(request: web.Request) -> web.Response:
    return _state_json(request, keys.user_key(request.match_info["user_id"]), "user")


async def get_record(request: web.Request) -> web.Response:
    return _state_json(request, keys.record_key(request.match_info["record_id"]), "record")


async def contract_call(request: web.Request) -> web.Response:
    """A read-only contract call, answered by this node from committed state."""
    node = request.app[NODE]
    body = await request.read()
    doc = json_object(body or b"{}", "expected {\"fn\": NAME, \"args\": {...}}")
    if not isinstance(doc.get("fn"), str):
        raise ValidationError("expected {\"fn\": NAME, \"args\": {...}}")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise ValidationError("args must be an object of keyword arguments")
    caller = Caller("", "anonymous", "low")
    if "X-Pie-User" in request.headers:
        user = node.request_verifier.verify(request.headers, request.method, request.path_qs, body, node.user_key)
        cert = node.ledger.state(keys.user_key(user))
        caller = Caller(user, cert["role"], cert["security_level"])
    head = node.ledger.head
    out = await asyncio.to_thread(
        read_only_call, node.contracts, node.committed_view(), request.match_info["name"], doc["fn"], args,
        caller, head.height, head.timestamp_ms,
    )
    return web.json_response(jsonable(out))


async def list_contracts(request: web.Request) -> web.Response:
    node = request.app[NODE]
    out = []
    for _, raw in node.kv.iterate(keys.STATE + b"c/"):
        rec = unpack(raw)
        out.append({k: rec[k] for k in ("name", "version", "code_hash", "deployed_at")})
    return web.json_response({"contracts": out})


async def genesis(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.Response(text=node.genesis.to_json(), content_type="application/json")


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=OPENAPI.read_text(), content_type="application/json")


def make_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[make_middleware(node)],
                          client_max_size=node.cfg.api.max_tx_body_bytes)
    app[NODE] = node
    add_file_routes(
        app,
        lambda: node.files.store,
        max_bytes=node.cfg.files.max_upload_bytes,
        source_getter=lambda: node.files.exchange,
        replication=node.files,
    )
    add_file_admin_routes(app, lambda: node.files.store, node.files.referenced_cids)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/genesis", genesis)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/blocks/{height}", get_block)
    app.router.add_post("/txs", post_txs)
    app.router.add_get("/txs/{tx_id}", get_tx)
    app.router.add_post("/users/register", register)
    app.router.add_get("/users/{user_id}", get_user)
    app.router.add_get("/records/{record_id}", get_record)
    add_download_routes(app)
    add_sharing_routes(app)
    app.router.add_get("/contracts", list_contracts)
    app.router.add_post("/contracts/{name}/call", contract_call)
    return app


class ApiServer:
    """The node's API on its port: the lean ``POST /txs`` front (``api.front``) before
    aiohttp, which gets every other request."""

    def __init__(self, runner: web.AppRunner, front: Front) -> None:
        self.runner = runner
        self.front = front

    async def cleanup(self) -> None:
        await self.front.close()
        await self.runner.cleanup()


async def serve(node: Node) -> ApiServer:
    runner = web.AppRunner(make_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    front = Front(node, runner.server)
    await front.start(node.cfg.api.host, node.cfg.api.port)
    return ApiServer(runner, front)
