"""HTTP/1.1 response parsing for the two lean clients (the load generator's and a record
download's), done by ``httptools`` (the C parser, llhttp, that uvicorn uses).

Owns: turning response bytes into status, headers and body. Must never: accept a response
head it could not fully parse, or read a body past the message's own end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools

#: Largest response head accepted (status line and headers).
MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: dict[str, str]  # names lower-cased
    keep_alive: bool
    content_length: int | None  # None: chunked, or until the connection closes

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


class ClosedBeforeAnswer(EOFError):
    """The connection closed before any byte of the response (a kept-alive connection
    the server had dropped)."""


class _Collector:
    """httptools' callbacks: headers, body pieces, and whether the message ended."""

    __slots__ = ("headers", "head_done", "body", "done")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.body: list[bytes] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True


class ResponseParser:
    """One response: feed its bytes, read its head, then (if wanted) its body."""

    def __init__(self) -> None:
        self._c = _Collector()
        self._p = httptools.HttpResponseParser(self._c)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Raises ValueError on bytes that are not an HTTP/1.x response."""
        try:
            self._p.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ValueError(f"malformed HTTP response: {exc}") from None

    @property
    def done(self) -> bool:
        return self._c.done

    def body(self) -> bytes:
        return b"".join(self._c.body)

    def head(self) -> ResponseHead:
        if not self._c.head_done:
            raise ValueError("incomplete HTTP response head")
        length = self._c.headers.get("content-length")
        return ResponseHead(status=self._p.get_status_code(), headers=self._c.headers,
                            keep_alive=self._p.should_keep_alive(),
                            content_length=int(length) if length is not None else None)


def parse_response_head(head: bytes) -> ResponseHead:
    """The head of a response, given its bytes up to and including the blank line.

    Raises:
        ValueError: too large, malformed, or not a complete head.
    """
    if len(head) > MAX_HEAD:
        raise ValueError("response head too large")
    parser = ResponseParser()
    parser.feed(head)
    return parser.head()


async def read_response(reader: asyncio.StreamReader) -> tuple[ResponseHead, bytes]:
    """Read one whole response (length-delimited, chunked, or until close) from ``reader``.

    Raises:
        ValueError: malformed. ClosedBeforeAnswer: closed before the response began.
        asyncio.IncompleteReadError / EOFError: closed inside it.
    """
    parser = ResponseParser()
    try:
        raw_head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ClosedBeforeAnswer() from None
        raise
    except ConnectionResetError:
        raise ClosedBeforeAnswer() from None
    parser.feed(raw_head)
    head = parser.head()
    if head.content_length is not None and not parser.done:
        parser.feed(await reader.readexactly(head.content_length))
    while not parser.done:
        data = await reader.read(65536)
        if not data:
            if head.content_length is None and not head.chunked:
                break  # a body that ends when the connection does
            raise EOFError("connection closed inside a response")
        parser.feed(data)
    return head, parser.body()
