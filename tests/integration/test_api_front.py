"""The API port's lean front (``api.front``): a plain ``POST /txs`` answered by it, anything
else by aiohttp on the same connection, with the same answers either way."""

from __future__ import annotations

import asyncio
import base64
import json
import time

from pienode.api.front import _parse_head
from pienode.crypto.keys import PrivateKey
from pienode.identity.certs import UserCert
from pienode.ledger.tx import Transaction
from pienode.net.http1 import read_response


def register_tx(node, n: int) -> bytes:
    cert = UserCert(f"pat-{n:016x}", "patient", "private", PrivateKey().public_key.data,
                    PrivateKey().public_key.data, "hospital-1", 1).signed_by(node.key)
    return Transaction.create(node.key, chain_id=node.genesis.chain_id, kind="register_user", sender="hospital-1",
                              timestamp_ms=time.time_ns() // 1_000_000, body={"cert": cert.to_dict()}).encode()


def post(body: bytes, query: str = "", extra: bytes = b"", ctype: bytes = b"application/json") -> bytes:
    return (b"POST /txs%s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (query.encode(), ctype, len(body), extra) + body)


def json_tx(data: bytes) -> bytes:
    return json.dumps({"tx": base64.b64encode(data).decode()}).encode()


async def answers(one_node, raw: bytes, count: int) -> list[tuple[int, dict]]:
    """Send ``raw`` on one fresh connection and read ``count`` responses in order."""
    port = int(one_node.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        out = []
        for _ in range(count):
            head, body = await asyncio.wait_for(read_response(reader), 20)
            out.append((head.status, json.loads(body) if body else {}))
        return out
    finally:
        writer.close()


async def test_lean_posts_then_other_requests_on_one_connection(one_node):
    """Two pipelined submissions (one waits for its commit), then a GET that aiohttp must
    answer on the same connection, then another submission that aiohttp now answers."""
    node = one_node.node
    a, b, c = (register_tx(node, i) for i in range(3))
    raw = (post(json_tx(a), "?wait=1&timeout_ms=10000") + post(b, ctype=b"application/octet-stream")
           + b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n" + post(json_tx(c), "?wait=1"))
    (s1, d1), (s2, d2), (s3, d3), (s4, d4) = await answers(one_node, raw, 4)
    assert s1 == 200 and d1["status"] == "committed" and d1["receipt"]["ok"]
    assert d1["tx_id"] == Transaction.decode(a, max_bytes=1 << 16).tx_id.hex()
    assert s2 == 202 and d2 == {"tx_id": Transaction.decode(b, max_bytes=1 << 16).tx_id.hex(), "status": "pending"}
    assert s3 == 200 and d3["node_id"] == "hospital-1"
    assert s4 == 200 and d4["status"] == "committed"


async def test_refusals_match_the_aiohttp_route(one_node):
    """The same bad or replayed submission gets the same status and error from the front and
    from aiohttp (reached through a header the front leaves to it)."""
    tx = register_tx(one_node.node, 7)
    cases = [(b"garbage", b"application/octet-stream"), (b"", b"application/octet-stream"),
             (b'{"txs": []}', b"application/json"), (b'{"tx": "not base64!"}', b"application/json")]
    for body, ctype in cases:
        lean = await answers(one_node, post(body, ctype=ctype), 1)
        via_aiohttp = await answers(one_node, post(body, ctype=ctype, extra=b"X-Pie-Min-Height: 0\r\n"), 1)
        assert lean == via_aiohttp and 400 <= lean[0][0] < 500 and "error" in lean[0][1], (body, lean)
    first = await answers(one_node, post(json_tx(tx), "?wait=1"), 1)
    assert first[0][0] == 200
    replay = await answers(one_node, post(json_tx(tx)), 1)
    replay_aiohttp = await answers(one_node, post(json_tx(tx), extra=b"X-Pie-Min-Height: 0\r\n"), 1)
    assert replay[0][0] == 409 and replay == replay_aiohttp
    assert await answers(one_node, post(json_tx(tx), "?wait=1&timeout_ms=abc"), 1) == replay  # admitted first


async def test_what_the_front_leaves_to_aiohttp_still_works(one_node):
    tx = register_tx(one_node.node, 9)
    body = json_tx(tx)
    chunked = (b"POST /txs?wait=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    [(status, doc)] = await answers(one_node, chunked, 1)
    assert status == 200 and doc["status"] == "committed"
    too_big = b"POST /txs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (3 * 1024 * 1024)
    [(status, doc)] = await answers(one_node, too_big, 1)
    assert status == 413
    [(status, doc)] = await answers(one_node, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert (status, doc) == (200, {"ok": True})


async def test_connection_close_is_honoured_and_answers_are_counted(one_node):
    port = int(one_node.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(b"garbage", ctype=b"application/octet-stream", extra=b"Connection: close\r\n"))
    head, _ = await read_response(reader)
    assert head.status == 400 and not head.keep_alive
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the front closed it
    writer.close()
    async with one_node.http.get(one_node.url + "/metrics") as r:
        text = await r.text()
    assert 'pie_api_requests_total{status="400"} 1.0' in text


def test_head_parsing_leaves_anything_unusual_to_aiohttp():
    ok = b"POST /txs?wait=1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: application/json; charset=utf-8"
    assert _parse_head(ok, 100) == ("wait=1", 5, "application/json", False)
    for head in (
        b"POST /txs HTTP/1.0\r\nContent-Length: 5",            # HTTP/1.0 keep-alive rules
        b"POST /txs/x HTTP/1.1\r\nContent-Length: 5",          # another route
        b"GET /txs HTTP/1.1",                                  # another method
        b"POST /txs HTTP/1.1",                                 # no length
        b"POST /txs HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5",
        b"POST /txs HTTP/1.1\r\nContent-Length: +5",
        b"POST /txs HTTP/1.1\r\nContent-Length: 500",          # over the limit: aiohttp says 413
        b"POST /txs HTTP/1.1\r\nContent-Length : 5",           # space before the colon
        b"POST /txs HTTP/1.1\r\nContent-Length: 5\r\n folded",
        b"POST /txs HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue",
        b"POST /txs HTTP/1.1\r\nContent-Length: 5\r\nX-Pie-Min-Height: 3",
        b"POST /txs HTTP/1.1\r\nContent-Length: 5\r\nConnection: upgrade",
    ):
        assert _parse_head(head, 100) is None, head


async def test_the_front_answers_plain_posts_itself(one_node):
    """Which side answered: aiohttp names itself in a Server header, the front does not."""
    port = int(one_node.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(post(b"garbage", ctype=b"application/octet-stream"))
        lean, _ = await read_response(reader)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        handed, _ = await read_response(reader)
    finally:
        writer.close()
    assert lean.status == 400 and "server" not in lean.headers
    assert handed.status == 200 and "aiohttp" in handed.headers.get("server", "")


def test_bare_line_feeds_are_left_to_aiohttp():
    assert _parse_head(b"POST /txs HTTP/1.1\r\nContent-Length: 5\nX-Pie-Min-Height: 3", 100) is None
    assert _parse_head(b"POST /txs HTTP/1.1\r\nContent-Length: 5\rX-Pie-Min-Height: 3", 100) is None


async def test_other_requests_are_handed_over_on_their_first_bytes(one_node):
    """A request that is not ``POST /txs`` is aiohttp's before its head is complete, so
    whatever aiohttp makes of it (here a bare-LF head) is what the client gets."""
    port = int(one_node.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\nHost: x\n\n")
        head, _ = await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()
    assert "aiohttp" in head.headers.get("server", "")


def test_the_one_transaction_json_shortcut_reads_what_the_json_parser_reads():
    """For any body, ``parse_txs_body`` gives what parsing the JSON then the base64 gives
    (or refuses what that refuses), shortcut or not."""
    from pienode.api.txs import parse_txs_body
    from pienode.errors import EncodingError

    def by_the_book(body: bytes):
        try:
            return [base64.b64decode(json.loads(body)["tx"], validate=True)]
        except (ValueError, KeyError, TypeError):
            return "refused"

    b64 = base64.b64encode(b"\x00\xffsome transaction bytes!")
    bodies = [b'{"tx":"' + b64 + b'"}', b'{"tx": "' + b64 + b'"}', b'{"tx":"' + b64[:4] + b"\\/" + b64[4:] + b'"}',
              b'{"tx":"' + b64[:4] + b'\\u0041' + b64[5:] + b'"}', b'{"tx":"}', b'{"tx":""}', b'{"tx":"a"b"}',
              b'{"tx":"!!!!"}', b'{"tx":"' + b64 + b'", "tx": "AAAA"}', b'{"tx":"AAAA"}']
    for body in bodies:
        try:
            got = parse_txs_body(body, "application/json")
        except EncodingError:
            got = "refused"
        assert got == by_the_book(body), body
