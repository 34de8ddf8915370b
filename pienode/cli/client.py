"""A small HTTP client for the node API, shared by ``pie`` and ``pienode``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import aiohttp

from pienode.errors import PieError


class RemoteError(PieError):
    """The node answered with an error."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(PieError):
    status = 503


class NodeClient:
    def __init__(self, base_url: str, *, timeout_s: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=5)
        self._session: aiohttp.ClientSession | None = None
        #: Headers added to every request (a session's read-your-writes height).
        self.extra_headers: Callable[[], dict[str, str]] | None = None

    async def __aenter__(self) -> "NodeClient":
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use NodeClient as an async context manager"
        return self._session

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        url = self.base + path
        if self.extra_headers is not None:
            kw["headers"] = {**self.extra_headers(), **kw.get("headers", {})}
        try:
            async with self.session.request(method, url, **kw) as resp:
                ctype = resp.headers.get("Content-Type", "")
                body = await resp.read()
                if resp.status >= 400:
                    msg = body.decode(errors="replace")[:300]
                    if "json" in ctype:
                        try:
                            import json

                            msg = json.loads(body).get("error", msg)
                        except ValueError:
                            pass
                    raise RemoteError(f"{msg} (HTTP {resp.status})", resp.status)
                if "json" in ctype:
                    import json

                    return json.loads(body)
                return body
        except aiohttp.ClientConnectorError:
            raise Unreachable(f"cannot reach the node at {self.base}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"request to {self.base} failed: {type(exc).__name__} {exc}".strip()) from None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params={k: str(v) for k, v in params.items() if v is not None})

    async def post_json(self, path: str, doc: Any) -> Any:
        return await self.request("POST", path, json=doc)

    async def submit(self, tx_bytes: bytes, *, wait: bool = True) -> dict[str, Any]:
        return await self.request(
            "POST", "/txs" + ("?wait=1" if wait else ""), json={"tx": base64.b64encode(tx_bytes).decode()}
        )

    async def submit_many(self, txs: list[bytes], *, wait: bool = True) -> dict[str, Any]:
        return await self.request(
            "POST", "/txs" + ("?wait=1" if wait else ""),
            json={"txs": [base64.b64encode(t).decode() for t in txs]},
        )
