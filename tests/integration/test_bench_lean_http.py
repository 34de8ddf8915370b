"""The load generator's lean HTTP/1.1 client against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from pienode.bench.lean_http import LeanHTTP


@pytest.fixture
async def server():
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Tag", ""))
        body = await request.read()
        return web.json_response({"method": request.method, "path": request.path_qs, "len": len(body),
                                  "body": body.decode()}, status=int(request.query.get("status", "200")))

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"ab", b"c" * 5000, b"d"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)  # a node slower than the client's timeout
        return web.Response(text="late")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, keepalive_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen, runner
    await runner.cleanup()


async def test_requests_reuse_one_keep_alive_connection(server):
    url, seen, _ = server
    http = LeanHTTP(timeout_s=5)
    for i in range(3):
        status, body = await http.request("POST", f"{url}/echo?x={i}", b'{"tx":"abc"}',
                                          {"Content-Type": "application/json", "X-Tag": str(i)})
        assert status == 200
        assert b'"path": "/echo?x=%d"' % i in body and b'"len": 12' in body
    assert seen == ["0", "1", "2"]
    assert sum(len(p) for p in http._idle.values()) == 1
    status, body = await http.request("GET", f"{url}/echo?status=404")
    assert status == 404 and b'"method": "GET"' in body
    await http.close()


async def test_chunked_response_is_read_whole(server):
    url, _, _ = server
    http = LeanHTTP(timeout_s=5)
    status, body = await http.request("GET", f"{url}/chunked")
    assert status == 200 and body == b"ab" + b"c" * 5000 + b"d"
    status, _ = await http.request("GET", f"{url}/echo")  # the connection is still usable
    assert status == 200
    await http.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced():
    """A node may close a keep-alive connection between two requests: the next request
    goes out again on a fresh connection instead of failing."""
    connections = 0

    async def one_answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no "Connection: close": the client pools it, as after an idle timeout

    srv = await asyncio.start_server(one_answer_then_close, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    http = LeanHTTP(timeout_s=5)
    for _ in range(3):
        assert await http.request("GET", f"{url}/x") == (200, b"ok")
    assert connections == 3
    srv.close()
    await srv.wait_closed()
    await http.close()


async def test_unreachable_and_slow_nodes_are_connection_errors(server):
    url, _, _ = server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    http = LeanHTTP(timeout_s=0.3)
    with pytest.raises(ConnectionError):
        await http.request("GET", f"http://127.0.0.1:{dead}/echo")
    with pytest.raises(ConnectionError):
        await http.request("GET", f"{url}/slow")
    assert sum(len(p) for p in http._idle.values()) == 0  # a timed-out connection is not reused
    assert (await http.request("GET", f"{url}/echo"))[0] == 200
    await http.close()
