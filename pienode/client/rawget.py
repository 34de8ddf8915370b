"""A lean HTTP/1.1 GET whose whole answer lands in one buffer: the download of a record.

Why not aiohttp's client here: receiving 1 MB through it costs ~3x the bare socket on this
machine (the body is parsed, copied and flow-controlled 64 KiB at a time); here the kernel
copies the answer straight into one buffer sized from Content-Length, which the caller then
hashes and decrypts in place. Only what a PIE node sends is understood: a status line,
headers with Content-Length, a body; anything else (chunked encoding, a body larger than
the caller allows, a closed connection) raises ``Unsupported`` and the caller takes the
general path (aiohttp) instead. Plain HTTP only (an ``https`` node goes the general way).

Owns: one keep-alive connection per ``RawGetter``. Must never: hand out body bytes before
they arrived, or allocate more than the caller's ``limit`` because a server said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Callable

from pienode.net.http1 import MAX_HEAD, parse_response_head

#: Largest buffer kept for the next answer (``RawGetter.give_back``); larger downloads
#: are rare and their page faults small beside their transfer.
SPARE_MAX = 16 << 20


class Unsupported(Exception):
    """This answer (or connection) is not one the lean path handles: use the general one."""


class _Answer(asyncio.BufferedProtocol):
    """Receives one answer at a time into ``buf``; ``head`` then ``body`` as they complete."""

    def __init__(self, limit: int, buf: bytearray | None = None) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reset(buf)

    def _reset(self, buf: bytearray | None = None) -> None:
        """Ready for the next answer, received into ``buf`` (a buffer given back, see
        ``RawGetter.give_back``) or a fresh one."""
        self.buf = buf if buf is not None and len(buf) >= MAX_HEAD else bytearray(MAX_HEAD)
        self.cap = len(self.buf)  # where receiving stops: the buffer's end, then the answer's
        self.n = 0
        self.body_at = -1  # where the body starts, once the head is parsed
        self.total = -1
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        loop = asyncio.get_running_loop()
        self.head_done: asyncio.Future[None] = loop.create_future()
        self.progress: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.n >= self.cap:  # more than an answer: the server broke the protocol
            self._fail(Unsupported("more bytes than the answer holds"))
            return memoryview(bytearray(sizehint or 65536))
        return memoryview(self.buf)[self.n:self.cap]

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        if self.body_at < 0:
            end = self.buf.find(b"\r\n\r\n", 0, self.n)
            if end < 0:
                if self.n >= MAX_HEAD:
                    self._fail(Unsupported("answer head too large"))
                return
            try:
                self._parse_head(bytes(self.buf[:end + 4]))
            except Unsupported as exc:
                self._fail(exc)
                return
            self.body_at = end + 4
            self.total = self.body_at + int(self.headers["content-length"])
            if self.total > len(self.buf):
                grown = bytearray(self.total)
                grown[: self.n] = self.buf[: self.n]
                self.buf = grown
            self.cap = self.total
            self.head_done.set_result(None)
        if not self.progress.done():
            self.progress.set_result(None)

    def _parse_head(self, raw: bytes) -> None:
        try:
            head = parse_response_head(raw)
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
        self.status, self.headers, self.keep_alive = head.status, head.headers, head.keep_alive
        if head.content_length is None or "transfer-encoding" in head.headers:
            raise Unsupported("an answer without a plain Content-Length")
        if head.content_length > self.limit:
            raise Unsupported("answer larger than the lean path takes")

    def _fail(self, exc: BaseException) -> None:
        for fut in (self.head_done, self.progress):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # seen here: whoever waits gets it too
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(Unsupported(f"connection lost: {exc}"))

    async def received(self, nbytes: int) -> memoryview:
        """The first ``nbytes`` of the body (all of it at most), once they arrived."""
        await self.head_done
        want = min(self.body_at + nbytes, self.total)
        while self.n < want:
            self.progress = asyncio.get_running_loop().create_future()
            if self.n < want:
                await self.progress
        if self.n > self.total:
            raise Unsupported("more bytes than the answer holds")
        return memoryview(self.buf)[self.body_at:want]


class RawGetter:
    """GETs on one kept-alive connection to ``base_url``, one at a time."""

    def __init__(self, base_url: str) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise Unsupported("the lean path speaks plain HTTP only")
        self._host, self._port = u.hostname, u.port or 80
        self._netloc = u.netloc
        self._conn: tuple[asyncio.Transport, _Answer] | None = None
        self._lock = asyncio.Lock()
        self._spare: bytearray | None = None

    def give_back(self, buf: bytearray) -> None:
        """Receive a later answer into ``buf``, an answer's buffer (``_Answer.buf``, taken
        while that answer was the current one: the object itself serves the next answer).
        Only for a caller that holds no view of it any more (``received``'s views are of
        this buffer): the next answer overwrites it. Why: the kernel copies a download
        into pages this process touches for the first time otherwise, ~0.1-0.2 ms of page
        faults per MB on this machine, on the critical path of every download."""
        if len(buf) <= SPARE_MAX and (self._spare is None or len(buf) >= len(self._spare)):
            self._spare = buf

    def _take_spare(self) -> bytearray | None:
        spare, self._spare = self._spare, None
        return spare

    async def _connection(self, limit: int) -> _Answer:
        if self._conn is not None and not self._conn[1].closed and not self._conn[0].is_closing():
            proto = self._conn[1]
            proto.limit = limit
            proto._reset(self._take_spare())
            return proto
        loop = asyncio.get_running_loop()
        spare = self._take_spare()
        transport, proto = await loop.create_connection(lambda: _Answer(limit, spare), self._host, self._port)
        self._conn = (transport, proto)
        return proto

    @contextlib.asynccontextmanager
    async def get(self, path: str, headers: dict[str, str], limit: int,
                  while_waiting: Callable[[], None] | None = None) -> AsyncIterator[_Answer]:
        """Send the request; its answer's head has arrived when this yields, its body
        arrives on the yielded object (``received``). ``while_waiting`` runs once the
        request is out, while the node works on it.

        Raises:
            Unsupported: see the module docstring (nothing that matters was consumed: retry
                the general way).
        """
        async with self._lock:
            lines = [f"GET {path} HTTP/1.1", f"Host: {self._netloc}", "Accept: */*"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            for attempt in range(2):  # a kept-alive connection the server dropped: once more
                try:
                    proto = await self._connection(limit)
                except OSError as exc:
                    raise Unsupported(f"cannot connect: {exc}") from None
                assert proto.transport is not None
                proto.transport.write(request)
                if while_waiting is not None and not attempt:
                    while_waiting()
                try:
                    await proto.head_done
                    break
                except Unsupported:
                    self.close()
                    if attempt or proto.n:
                        raise
            try:
                yield proto
            finally:
                # Kept for the next request only if this answer was read whole and the
                # server does not mean to close.
                if proto.n != proto.total or not proto.keep_alive:
                    self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn[0].close()
            self._conn = None
