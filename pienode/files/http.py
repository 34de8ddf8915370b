"""HTTP handlers of the file store: ``POST /files``, ``GET``/``HEAD /files/{cid}``, and the
operator routes (list, stat, pin, gc, verify) behind ``pienode files``.

Owns: turning requests into streaming ingest and ranged reads, and the status codes of the
file API (400 malformed CID or body, 404 unknown, 413 over the maximum, 416 unsatisfiable
range), each with a JSON body ``{"error": ...}``.

Must never: read a whole upload or file into memory, decide who may call it (the node wraps
these routes with its authentication), or log file contents.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import BinaryIO, Protocol

from aiohttp import BodyPartReader, web

from pienode.errors import EncodingError, PieError
from pienode.files.cid import CID, CidError
from pienode.files.store import DEFAULT_GRACE_SECONDS, BlockMissing, FileInfo, PackStore
from pienode.files.stream import BlockSource, IngestSink, Span, file_spans, ingest, read, read_all, stat

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
READ_PIECE = 1 << 20
#: Socket read size while an upload's body streams in (asyncio reads 256 KiB at a time).
#: Pieces of 1 MiB leave three chunks of four wholly inside one piece, where ingest takes
#: them without a copy (issue 7), and cost a quarter of the reads and hand-offs.
UPLOAD_RECV_SIZE = 1 << 20
#: ``X-Pie-Verify: client`` on a file read: the client checks every byte against the CID
#: itself (the EMR client rebuilds the CID from what it receives), so the node serves its
#: stored copy without hashing it again. Without it, the node checks every block it serves
#: and repairs a damaged one from a peer first: a client that cannot check never gets bytes
#: that do not match the CID.
VERIFY_HEADER = "X-Pie-Verify"
VERIFY_CLIENT = "client"

StoreGetter = Callable[[], PackStore]
SourceGetter = Callable[[], BlockSource | None]
#: Called with a fresh upload before it is acknowledged (replication to peers); raising
#: turns the upload into an error response (the file stays stored locally).
IngestHook = Callable[[FileInfo], Awaitable[None]]


class UploadReplication(Protocol):
    """Copies of an upload made while it streams in (the node's ``FileService``)."""

    async def open_upload(self) -> IngestSink | None:
        """A sink that receives the upload's blocks as they are stored (None: no push)."""
        ...

    async def acknowledge(self, info: FileInfo, sink: IngestSink | None) -> None:
        """Return only once enough hospitals hold ``info`` durably; raise otherwise (the
        upload then gets an error response; the file stays stored locally)."""
        ...


#: Set once a response's headers are sent: an error after that must cut the connection.
RESPONSE_STARTED: "web.RequestKey[bool] | str" = (
    web.RequestKey("response_started", bool) if hasattr(web, "RequestKey") else "response_started"
)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _from_exc(exc: PieError) -> web.Response:
    body = exc.to_json()
    return web.json_response(body, status=exc.status if exc.status < 600 else 500)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """One ``Range: bytes=...`` against a file of ``size`` bytes.

    Returns: (start, end exclusive); None to serve the whole file (no header, a syntax we
    ignore as RFC 9110 allows, or several ranges); the string "unsatisfiable" for a 416.
    """
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        return "unsatisfiable"
    end = size if last == "" else min(int(last) + 1, size)
    return start, end


async def _body_pieces(request: web.Request) -> AsyncIterator[bytes]:
    """The upload's bytes: the raw body, or the first file part of a multipart form
    (what ``curl -F file=@x`` and kubo's API clients send)."""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        part = await reader.next()
        while part is not None and not isinstance(part, BodyPartReader):
            part = await reader.next()
        if part is None:
            raise EncodingError("multipart upload without a file part")
        while True:
            piece = await part.read_chunk(READ_PIECE)
            if not piece:
                return
            yield piece
    else:
        transport = request.transport
        widened = False
        if transport is not None and (request.content_length or 0) >= UPLOAD_RECV_SIZE:
            try:
                transport.max_size = UPLOAD_RECV_SIZE  # type: ignore[attr-defined]
                widened = True
            except AttributeError:  # not asyncio's selector transport: keep its read size
                pass
        try:
            async for piece in request.content.iter_chunked(READ_PIECE):
                yield piece
        finally:
            if widened:  # the connection may carry small requests next: back to asyncio's size
                del transport.max_size  # type: ignore[union-attr]


async def write_pieces(resp: web.StreamResponse, pieces: AsyncIterator[bytes | memoryview], cid: CID) -> None:
    """Send a file's pieces on a response whose headers are out.

    Raises:
        PieError: a block failed mid-stream; the caller lets it cut the connection short of
            Content-Length, which every client reports as a failed download.
    """
    try:
        async for piece in pieces:
            await resp.write(piece)
    except PieError as exc:
        log.warning("file read of %s failed mid-stream: %s", cid, exc.message)
        raise


class OpenSpans:
    """The pack files of a file's spans (``stream.file_spans``), opened before the response
    starts: a pack that gc drops afterwards stays readable until they are closed."""

    def __init__(self, spans: list[Span]) -> None:
        self.files: list[tuple[BinaryIO, int, int]] = []
        try:
            for path, off, n in spans:
                self.files.append((open(path, "rb"), off, n))  # noqa: SIM115  # closed in close()
        except OSError:
            self.close()
            raise

    async def send(self, request: web.Request) -> None:
        """Send the spans with ``sendfile``: from the page cache to the socket, no copy
        through this process (aiohttp's own file responses do the same)."""
        loop = asyncio.get_running_loop()
        for f, off, n in self.files:
            if request.transport is None:
                raise ConnectionResetError("connection lost")
            await loop.sendfile(request.transport, f, off, n)

    def close(self) -> None:
        for f, _, _ in self.files:
            f.close()


def open_spans(store: PackStore, cid: CID, size: int | None = None) -> tuple[int, OpenSpans] | None:
    """A small file stored whole here, ready to send unchecked (``stream.file_spans``);
    None when it must be read (larger, partly elsewhere, or its pack just went away).
    ``size``: the file's size if the caller just looked its root up."""
    found = file_spans(store, cid, size=size)
    if found is None:
        return None
    size, spans = found
    try:
        return size, OpenSpans(spans)
    except OSError:
        return None


def add_file_routes(
    app: web.Application,
    store_getter: StoreGetter,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    source_getter: SourceGetter | None = None,
    on_ingested: IngestHook | None = None,
    replication: UploadReplication | None = None,
) -> None:
    """Register ``POST /files``, ``GET /files/{cid}`` and ``HEAD /files/{cid}`` on ``app``.

    Args:
        store_getter: returns the node's store (called per request, so the node may open it
            after building the app).
        max_bytes: largest upload accepted; larger ones get 413 and leave nothing behind.
        source_getter: returns the peer exchange used to serve files or blocks this node
            lacks (None: serve only what is local).
        on_ingested: awaited before an upload is acknowledged (replication after ingest).
        replication: copies made while the upload streams in, and the acknowledgement's
            condition (takes the place of ``on_ingested``).
    """

    async def post_file(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > max_bytes:
            return _error(413, f"upload exceeds the maximum of {max_bytes} bytes")
        store = store_getter()
        started = time.monotonic()
        sink = await replication.open_upload() if replication is not None else None
        try:
            info = await ingest(store, _body_pieces(request), max_bytes, sink=sink)
        except PieError as exc:
            return _from_exc(exc)
        except (ValueError, AssertionError) as exc:  # malformed multipart framing
            return _error(400, f"malformed upload: {exc}")
        stored = time.monotonic()
        try:
            if replication is not None:
                await replication.acknowledge(info, sink)
            elif on_ingested is not None:
                await on_ingested(info)
        except PieError as exc:
            return _from_exc(exc)
        log.info("upload %s (%d bytes): stored in %.2f s, acknowledged after %.2f s more", info.cid,
                 info.size, stored - started, time.monotonic() - stored)
        return web.json_response({"cid": info.cid, "size": info.size})

    async def get_file(request: web.Request) -> web.StreamResponse:
        try:
            cid = CID.parse(request.match_info["cid"])
        except CidError as exc:
            return _error(400, exc.message)
        store = store_getter()
        source = source_getter() if source_getter is not None else None
        verify = request.headers.get(VERIFY_HEADER) != VERIFY_CLIENT
        whole = request.method == "GET" and request.headers.get("Range") is None
        pieces: AsyncIterator[bytes | memoryview] | None = None
        unread = open_spans(store, cid) if whole and not verify else None
        try:
            if unread is not None:  # the client checks: sent from the page cache as it is
                size = unread[0]
            elif whole:  # the common case: one worker-thread hop reads a small file at once
                size, pieces = await read_all(store, cid, source=source, verify=verify)
            else:
                size = await stat(store, cid, source=source)
        except BlockMissing:
            return _error(404, "no such file")
        except PieError as exc:
            return _from_exc(exc)
        rng = None if whole else parse_range(request.headers.get("Range"), size)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "ETag": f'"{cid}"',
            "Cache-Control": "public, max-age=31536000, immutable",
        }
        if rng == "unsatisfiable":
            del headers["Content-Type"]
            headers["Content-Range"] = f"bytes */{size}"
            return web.json_response(
                {"error": "range not satisfiable", "size": size}, status=416, headers=headers
            )
        if rng is None:
            status, start, end = 200, 0, size
        else:
            assert isinstance(rng, tuple)
            status, (start, end) = 206, rng
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        request[RESPONSE_STARTED] = True  # an error past here must cut the connection
        try:
            await resp.prepare(request)
            if request.method == "HEAD":
                await resp.write_eof()
                return resp
            if unread is not None:
                await unread[1].send(request)
            else:
                if pieces is None:
                    pieces = read(store, cid, start, end, source=source, verify=verify)
                await write_pieces(resp, pieces, cid)
        finally:
            if unread is not None:
                unread[1].close()
        await resp.write_eof()
        return resp

    app.router.add_post("/files", post_file)
    app.router.add_get("/files/{cid}", get_file, allow_head=False)
    app.router.add_route("HEAD", "/files/{cid}", get_file)


ReferencedGetter = Callable[[], Awaitable[Iterable[str]]]


def add_file_admin_routes(
    app: web.Application,
    store_getter: StoreGetter,
    referenced_getter: ReferencedGetter,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
) -> None:
    """Operator routes behind ``pienode files`` (the node keeps them to loopback/operators):

        GET    /files                 -> {"files": [{"cid", "size", "added", "pinned"}]}
        GET    /files/{cid}/stat      -> {"cid", "size", "complete": bool, "pinned": bool}
        PUT    /files/{cid}/pin       -> {"cid", "pinned": true}
        DELETE /files/{cid}/pin       -> {"cid", "pinned": false}
        POST   /files/gc              -> {"blocks_removed", "bytes_removed", ...}
        POST   /files/verify          -> {"ok", "blocks_checked", "damaged", ...}

    Args:
        referenced_getter: the CIDs committed records point to (from the ledger); gc never
            collects what they reach.
    """
    from pienode.files import admin

    def _cid(request: web.Request) -> CID:
        return CID.parse(request.match_info["cid"])

    async def list_files(request: web.Request) -> web.Response:
        entries = await asyncio.to_thread(admin.ls, store_getter())
        return web.json_response({"files": [dataclasses.asdict(e) for e in entries]})

    async def stat_file(request: web.Request) -> web.Response:
        try:
            cid = _cid(request)
            store = store_getter()
            size = await stat(store, cid)
        except CidError as exc:
            return _error(400, exc.message)
        except BlockMissing:
            return _error(404, "no such file")
        except PieError as exc:
            return _from_exc(exc)
        complete = await asyncio.to_thread(admin.is_complete, store, cid)
        return web.json_response(
            {"cid": str(cid), "size": size, "complete": complete, "pinned": cid in store.pins()}
        )

    async def pin(request: web.Request) -> web.Response:
        try:
            cid = _cid(request)
        except CidError as exc:
            return _error(400, exc.message)
        store = store_getter()
        if request.method == "PUT":
            if not await asyncio.to_thread(store.has, cid):
                return _error(404, "no such file")
            await asyncio.to_thread(store.pin, cid)
        else:
            await asyncio.to_thread(store.unpin, cid)
        return web.json_response({"cid": str(cid), "pinned": request.method == "PUT"})

    async def gc(request: web.Request) -> web.Response:
        referenced = [str(c) for c in await referenced_getter()]
        try:
            res = await asyncio.to_thread(
                store_getter().gc, referenced, grace_seconds=grace_seconds
            )
        except PieError as exc:
            return _from_exc(exc)
        return web.json_response(dataclasses.asdict(res))

    async def verify(request: web.Request) -> web.Response:
        report = await asyncio.to_thread(admin.verify, store_getter())
        return web.json_response(report.to_json())

    app.router.add_get("/files", list_files)
    app.router.add_post("/files/gc", gc)
    app.router.add_post("/files/verify", verify)
    app.router.add_get("/files/{cid}/stat", stat_file)
    app.router.add_put("/files/{cid}/pin", pin)
    app.router.add_delete("/files/{cid}/pin", pin)
