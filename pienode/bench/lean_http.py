"""A lean HTTP/1.1 client for the load generator's hot path: keep-alive connections per
node, one request in flight per connection, nothing else.

Why not aiohttp's client: on a 2-core machine the load generator shares the CPU with the
four nodes it measures, and aiohttp's client spends several hundred microseconds of Python
per request (request and response objects, header multidicts, payload registry, timers),
which is CPU the nodes do not get. This client writes one request and parses one response
with a handful of calls.

It never retries a request on its own except once, on a fresh connection, when a reused
keep-alive connection turns out to be closed before any byte of the answer arrived (the
node closed it while idle); resending is safe because every request of the load is
idempotent (a transaction id commits at most once). Every other failure is a
``ConnectionError`` for the caller.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

#: Largest response head accepted (status line and headers).
MAX_HEAD = 64 * 1024


class _Stale(Exception):
    """A reused connection was closed before the answer began."""


class LeanHTTP:
    def __init__(self, *, timeout_s: float, connect_timeout_s: float = 3.0, max_idle_per_host: int = 1024) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def request(self, method: str, url: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of one request.

        Raises:
            ConnectionError: the node did not answer (refused, reset, closed, timed out,
                or sent something that is not HTTP/1.1).
        """
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        pool = self._idle.setdefault((host, port), [])
        if pool:
            conn = pool.pop()
            try:
                return await self._exchange(conn, raw, pool, reused=True)
            except _Stale:
                pass
        try:
            conn = await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectionError(type(exc).__name__) from None
        try:
            return await self._exchange(conn, raw, pool, reused=False)
        except _Stale:
            raise ConnectionError("connection closed") from None

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes,
                        pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
                        *, reused: bool) -> tuple[int, bytes]:
        reader, writer = conn
        answered = False
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                answered = True
                status, length, chunked, close = _parse_head(head)
                if chunked:
                    data = await _read_chunked(reader)
                elif length is not None:
                    data = await reader.readexactly(length)
                else:
                    data, close = await reader.read(), True
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError) as exc:
            writer.close()
            if reused and not answered and not isinstance(exc, TimeoutError):
                raise _Stale() from None
            raise ConnectionError(type(exc).__name__) from None
        except BaseException:
            writer.close()  # cancelled mid-exchange: the connection's state is unknown
            raise
        if close or len(pool) >= self.max_idle_per_host:
            writer.close()
        else:
            pool.append(conn)
        return status, data

    async def close(self) -> None:
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length, chunked, close) of a response head.

    Raises:
        ValueError: not an HTTP/1.x response.
    """
    if len(head) > MAX_HEAD:
        raise ValueError("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x response")
    status = int(rest[:3])
    length: int | None = None
    chunked = False
    close = version == "HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
            if length < 0:
                raise ValueError("negative content length")
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            close = value.lower() == "close"
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
