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

from pienode.net.http1 import ClosedBeforeAnswer, read_response


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
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(raw)
                head, data = await read_response(reader)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError) as exc:
            writer.close()
            if reused and isinstance(exc, ClosedBeforeAnswer):
                raise _Stale() from None
            raise ConnectionError(type(exc).__name__) from None
        except BaseException:
            writer.close()  # cancelled mid-exchange: the connection's state is unknown
            raise
        if not head.keep_alive or len(pool) >= self.max_idle_per_host:
            writer.close()
        else:
            pool.append(conn)
        return head.status, data

    async def close(self) -> None:
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
        self._idle.clear()
