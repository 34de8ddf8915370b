"""The API port's front: a plain ``POST /txs`` answered without aiohttp, anything else handed
to aiohttp with the connection.

Why (issue 3): under load every transaction is its own small request, and aiohttp's request
machinery (request and response objects, routing, middleware, stream reader and writer) cost
the entry node more CPU per transaction than admitting it: ~215 us against ~90 us for this
front, server side, measured with the same client. The front parses the request head itself
and calls the same ``submit_txs`` as the aiohttp route, so the answers are the same.

Owns: a connection from its first byte until the first request that is not a plain
``POST /txs`` (HTTP/1.1, a ``Content-Length`` body within the limit, no ``Expect``,
``Transfer-Encoding`` or ``X-Pie-Min-Height``); that request and everything after it go to
aiohttp's protocol for good, bytes already read included, so aiohttp sees an ordinary
connection. Requests on one connection are answered in order, one at a time.

Never: answers anything but ``POST /txs`` itself, buffers more than one largest request
ahead while answering (reading pauses), reads on while the client leaves its answers
unread, or keeps a connection with nothing to answer past ``KEEPALIVE_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

from pienode.api.render import jsonable
from pienode.api.txs import parse_txs_body, submit_txs
from pienode.errors import PieError

log = logging.getLogger("pienode.api")

_PREFIX = b"POST /txs"
#: Largest request head the front reads; a longer one goes to aiohttp (which refuses it).
MAX_HEAD = 8 * 1024
#: An idle kept-alive connection (or a request head that never completes) is closed after this.
KEEPALIVE_S = 75.0
_REASONS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found",
            409: b"Conflict", 413: b"Payload Too Large", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


class FrontProtocol(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, front: "Front") -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a request is being answered
        self._write_paused = False  # the client is not reading its answers
        self._read_paused = False
        self._idle: asyncio.TimerHandle | None = None
        self._last_answer = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._front.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy and not self._write_paused:
            self._next()
        elif len(self._buf) > self._front.max_body + MAX_HEAD and self._transport is not None:
            # Pipelined requests pile up while one is answered: read on only once they fit.
            self._transport.pause_reading()
            self._read_paused = True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy and self._transport is not None:
            self._resume()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- requests ------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        """One timer per connection, re-armed when it fires rather than per request (a
        timer per request cost more than parsing the request head)."""
        loop = asyncio.get_running_loop()
        self._last_answer = loop.time()
        self._idle = loop.call_later(KEEPALIVE_S, self._check_idle)

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        left = self._last_answer + KEEPALIVE_S - loop.time()
        if self._busy or left > 0:
            self._idle = loop.call_later(max(left, 1.0), self._check_idle)
        else:
            self.close()

    def _next(self) -> None:
        """Take the next complete request off the buffer, or hand the connection over."""
        if self._transport is None:
            return
        buf = self._buf
        if not buf.startswith(_PREFIX):
            if len(buf) >= len(_PREFIX) or not _PREFIX.startswith(buf):
                self._hand_over()  # decided by the first bytes: no waiting for a whole head
            return
        end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(buf) > MAX_HEAD or b"\n\n" in buf or b"\n\r\n" in buf:
                self._hand_over()  # too long, or lines ended by a bare LF: aiohttp decides
            return
        head = _parse_head(bytes(buf[:end]), self._front.max_body)
        if head is None:
            self._hand_over()
            return
        query, length, content_type, close = head
        if len(buf) < end + 4 + length:
            return  # the body is still coming
        body = bytes(buf[end + 4:end + 4 + length])
        del buf[:end + 4 + length]
        self._busy = True
        task = asyncio.get_running_loop().create_task(self._answer(query, body, content_type, close))
        self._front.tasks.add(task)
        task.add_done_callback(self._front.tasks.discard)

    async def _answer(self, query: str, body: bytes, content_type: str, close: bool) -> None:
        status, doc = await self._front.handle(query, body, content_type)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        payload = json.dumps(doc).encode()
        transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                        b"Content-Length: %d\r\n%s\r\n" % (status, _REASONS.get(status, b"Unknown"), len(payload),
                                                           b"Connection: close\r\n" if close else b"") + payload)
        if close:
            transport.close()
            return
        self._busy = False
        self._last_answer = asyncio.get_running_loop().time()
        if self._write_paused:
            return  # ``resume_writing`` reads on once the client has taken its answers
        self._resume()

    def _resume(self) -> None:
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        if self._buf:
            self._next()

    def _hand_over(self) -> None:
        """Give the connection, with the bytes read so far, to aiohttp for good."""
        transport = self._transport
        assert transport is not None
        self._front.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        self._transport = None
        proto = self._front.fallback()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self._buf:
            data, self._buf = bytes(self._buf), bytearray()
            proto.data_received(data)


def _parse_head(head: bytes, max_body: int) -> tuple[str, int, str, bool] | None:
    """(query string, body length, content type, close after answering) of a request the
    front answers itself, or None for any other request (aiohttp's to answer)."""
    if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
        return None  # a bare CR or LF: how aiohttp splits such lines is its own business
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    target = parts[1]
    path, _, query = target.partition(b"?")
    if path != b"/txs":
        return None
    length = -1
    content_type = ""
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return None  # malformed, or whitespace before the colon: aiohttp refuses it
        name = name.lower()
        value = value.strip()
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 12:
                return None
            length = int(value)
        elif name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        elif name == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"upgrade" in tokens:
                return None
            close = b"close" in tokens
        elif name in (b"transfer-encoding", b"expect", b"upgrade", b"x-pie-min-height"):
            return None
    if length < 0 or length > max_body:
        return None
    try:
        return query.decode("ascii"), length, content_type, close
    except UnicodeDecodeError:
        return None


def _query_args(query: str) -> tuple[str, str | None]:
    """``wait`` and ``timeout_ms`` of a query string (the first of each, as aiohttp's
    ``query.get`` gives)."""
    wait, timeout = "", None
    if query:
        from urllib.parse import unquote_plus

        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if key == "wait" and wait == "":
                wait = unquote_plus(value)
            elif key == "timeout_ms" and timeout is None:
                timeout = unquote_plus(value)
    return wait, timeout


class Front:
    """The listening side: the aiohttp fallback, the live connections and answering tasks."""

    def __init__(self, node: Any, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.node = node
        self.fallback = fallback
        self.max_body = node.cfg.api.max_tx_body_bytes
        self.connections: set[FrontProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._counters: dict[int, Any] = {}

    def protocol(self) -> FrontProtocol:
        return FrontProtocol(self)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.protocol, host, port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _count(self, status: int) -> None:
        child = self._counters.get(status)
        if child is None:
            child = self._counters[status] = self.node.metrics.api_requests.labels(str(status))
        child.inc()

    async def handle(self, query: str, body: bytes, content_type: str) -> tuple[int, Any]:
        """``POST /txs`` as the aiohttp route answers it, errors mapped as its middleware does."""
        try:
            wait, timeout = _query_args(query)
            status, doc = await submit_txs(self.node, parse_txs_body(body, content_type), wait, timeout)
        except PieError as exc:
            if exc.status >= 500:
                log.warning("POST /txs failed: %s", exc.message)
            status, doc = exc.status, jsonable(exc.to_json())
        except Exception:
            log.exception("internal error on POST /txs")
            status, doc = 500, {"error": "internal error"}
        self._count(status)
        return status, doc
