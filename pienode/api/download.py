"""``GET /records/{record_id}/content``: a record and its stored ciphertext in one round trip.

A download used to be two: ``GET /records/{id}`` for the keys and the CID, then
``GET /files/{cid}``. Here the node answers both at once, so the client opens the record's
keys while the ciphertext is still arriving.

Answer (``Content-Type: application/vnd.pie.record-content``)::

    u32 BE n || n bytes: the record as GET /records/{id} gives it (JSON) || the file at its CID

Who may ask: the same as ``GET /files/{cid}`` (the node's own host, or a request signed by a
registered user); the ciphertext opens only with keys sealed in the record.

Owns: this route and its framing. Must never: serve a byte that it has not checked against
the record's CID unless the client said it checks them itself (``X-Pie-Verify: client``,
as on ``GET /files``), or read a large file into memory (only small ones are read at once).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from aiohttp import web

from pienode.api.render import jsonable
from pienode.errors import FileStoreError, NotFound, ValidationError
from pienode.files.cid import CID, CidError
from pienode.files.http import (
    RESPONSE_STARTED,
    VERIFY_CLIENT,
    VERIFY_HEADER,
    open_spans,
    write_pieces,
)
from pienode.files.store import BlockDamaged, BlockMissing
from pienode.files.stream import read, read_all
from pienode.ledger import keys

CONTENT_TYPE = "application/vnd.pie.record-content"
LENGTH = struct.Struct(">I")


class _Answer(web.StreamResponse):
    """Headers go out with the record, in one send (as aiohttp's ``Response`` does), not
    in one of their own: one wake-up of the client fewer per download."""

    _send_headers_immediately = False


def _node(request: web.Request) -> Any:
    from pienode.api.app import NODE

    return request.app[NODE]


async def get_record_content(request: web.Request) -> web.StreamResponse:
    from pienode.api.app import is_local

    node = _node(request)
    if not is_local(request):
        node.request_verifier.verify(request.headers, request.method, request.path_qs, None, node.user_key)
    record_id = request.match_info["record_id"]
    rec = node.ledger.state(keys.record_key(record_id))
    if rec is None:
        raise NotFound("unknown record", record_id=record_id)
    try:
        cid = CID.parse(rec["cid"])
    except CidError:
        raise ValidationError("the record names a malformed CID", record_id=record_id) from None
    head = json.dumps(jsonable(rec), separators=(",", ":")).encode()
    store = node.files.store
    verify = request.headers.get(VERIFY_HEADER) != VERIFY_CLIENT
    pieces = None
    try:
        # Unchecked: the size from the index is enough to send the record at once, so the
        # client opens its keys while the file is located and sent.
        size = None if verify else store.file_size(cid)
    except (BlockMissing, BlockDamaged):
        size = None
    if size is None:
        size, pieces = await read_all(store, cid, source=node.files.exchange, verify=verify)
    # The record's own string: ``CID.parse`` accepts only the canonical spelling of ``cid``.
    resp = _Answer(headers={"Content-Type": CONTENT_TYPE, "ETag": f'"{rec["cid"]}"'})
    resp.content_length = LENGTH.size + len(head) + size
    request[RESPONSE_STARTED] = True  # an error past here must cut the connection
    await resp.prepare(request)
    await resp.write(LENGTH.pack(len(head)) + head)
    unread = open_spans(store, cid, size) if pieces is None else None  # the root once
    if unread is None:
        if pieces is None:
            pieces = read(store, cid, 0, size, source=node.files.exchange, verify=verify)
        await write_pieces(resp, pieces, cid)
    else:
        try:
            if unread[0] != size:
                raise FileStoreError("the file changed size while it was sent", cid=str(cid))
            await unread[1].send(request)  # from the page cache as it is: the client checks
        finally:
            unread[1].close()
    await resp.write_eof()
    return resp


def add_download_routes(app: web.Application) -> None:
    app.router.add_get("/records/{record_id}/content", get_record_content)
