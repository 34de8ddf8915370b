"""The file API over real HTTP on loopback: upload, download, Range, HEAD and error codes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pienode.files.http import add_file_routes, parse_range
from pienode.files.store import PackStore
from pienode.files.unixfs import CHUNK_SIZE, cid_of_bytes

MAX = 3 * CHUNK_SIZE
DATA = random.Random(2).randbytes(2 * CHUNK_SIZE + 4321)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, PackStore]]:
    store = PackStore(tmp_path / "files")
    app = web.Application()
    add_file_routes(app, lambda: store, max_bytes=MAX)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c, store
    store.close()


async def _upload(c: TestClient, data: bytes) -> dict:
    r = await c.post("/files", data=data)
    assert r.status == 200, await r.text()
    return await r.json()


async def test_upload_download_roundtrip(client) -> None:
    c, _ = client
    body = await _upload(c, DATA)
    assert body == {"cid": str(cid_of_bytes(DATA)), "size": len(DATA)}
    r = await c.get(f"/files/{body['cid']}")
    assert r.status == 200
    assert r.headers["Content-Length"] == str(len(DATA))
    assert r.headers["Accept-Ranges"] == "bytes"
    assert await r.read() == DATA


async def test_streamed_chunked_upload(client) -> None:
    c, _ = client

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(DATA), 65_537):
            yield DATA[i : i + 65_537]

    r = await c.post("/files", data=gen())
    assert (await r.json())["cid"] == str(cid_of_bytes(DATA))


async def test_multipart_upload(client) -> None:
    c, _ = client
    form = aiohttp.FormData()
    form.add_field("file", DATA[:1000], filename="x.bin")
    r = await c.post("/files", data=form)
    assert (await r.json())["cid"] == str(cid_of_bytes(DATA[:1000]))


@pytest.mark.parametrize(
    "header,start,end",
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        (f"bytes={CHUNK_SIZE - 2}-{CHUNK_SIZE + 1}", CHUNK_SIZE - 2, CHUNK_SIZE + 2),
        (f"bytes={CHUNK_SIZE * 2}-", CHUNK_SIZE * 2, len(DATA)),
        ("bytes=-100", len(DATA) - 100, len(DATA)),
        ("bytes=5-99999999", 5, len(DATA)),
    ],
)
async def test_range_206(client, header: str, start: int, end: int) -> None:
    c, _ = client
    cid = (await _upload(c, DATA))["cid"]
    r = await c.get(f"/files/{cid}", headers={"Range": header})
    assert r.status == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert await r.read() == DATA[start:end]


async def test_unsatisfiable_range_416(client) -> None:
    c, _ = client
    cid = (await _upload(c, DATA))["cid"]
    r = await c.get(f"/files/{cid}", headers={"Range": f"bytes={len(DATA)}-"})
    assert r.status == 416
    assert r.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert "error" in await r.json()


async def test_head(client) -> None:
    c, _ = client
    cid = (await _upload(c, DATA))["cid"]
    r = await c.head(f"/files/{cid}")
    assert r.status == 200
    assert r.headers["Content-Length"] == str(len(DATA))
    assert await r.read() == b""
    r = await c.head(f"/files/{cid}", headers={"Range": "bytes=1-2"})
    assert r.status == 206 and r.headers["Content-Length"] == "2"


async def test_malformed_and_unknown_cids(client) -> None:
    c, store = client
    for bad in ("nope", "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR", "b" + "a" * 58):
        r = await c.get(f"/files/{bad}")
        assert r.status == 400, bad
        assert "error" in await r.json()
    r = await c.get(f"/files/{cid_of_bytes(b'never stored')}")
    assert r.status == 404
    assert "error" in await r.json()
    assert store.stats().blocks == 0


async def test_too_large_413_leaves_nothing(client) -> None:
    c, store = client
    big = random.Random(5).randbytes(MAX + 1)
    r = await c.post("/files", data=big)  # Content-Length known: refused up front
    assert r.status == 413
    assert "error" in await r.json()

    async def gen() -> AsyncIterator[bytes]:  # no Content-Length: refused mid-stream
        for i in range(0, len(big), CHUNK_SIZE // 2):
            yield big[i : i + CHUNK_SIZE // 2]

    try:
        r = await c.post("/files", data=gen())
        assert r.status == 413
    except aiohttp.ClientError:
        pass  # the server may cut the connection once it answered 413
    st = store.stats()
    assert st.blocks == 0 and st.roots == 0 and st.pack_bytes == 0


def test_parse_range_edge_cases() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=3-1", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=0-1,4-5", 10) is None
    assert parse_range("bytes=-0", 10) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    assert parse_range("bytes=-20", 10) == (0, 10)


async def test_other_hospital_serves_and_upload_waits_for_replication(tmp_path: Path) -> None:
    """Two nodes' HTTP apps over one in-memory exchange: an upload to A is acknowledged only
    after B holds it; B serves it byte-identical (and a Range) with A gone."""
    from pienode.errors import NetError
    from pienode.files.exchange import BlockExchange, ExchangeConfig

    ids = ["hospital-1", "hospital-2"]
    stores = {i: PackStore(tmp_path / i) for i in ids}
    down: set[str] = set()
    exchanges: dict[str, BlockExchange] = {}

    def requester(me: str):
        async def request(peer: str, payload: bytes, timeout: float) -> bytes:
            payload = bytes(payload)  # the link sends Parts back to back
            if peer in down:
                raise NetError("link down", peer=peer)
            return await exchanges[peer].handle_request(me, payload)

        return request

    for i in ids:
        exchanges[i] = BlockExchange(stores[i], requester(i), lambda: ids,
                                     ExchangeConfig(replication=1), node_id=i)

    def app_for(i: str) -> web.Application:
        app = web.Application()

        async def replicate(info) -> None:
            res = await exchanges[i].replicate(info)
            assert len(res.confirmed) == 1

        add_file_routes(app, lambda: stores[i], max_bytes=MAX,
                        source_getter=lambda: exchanges[i], on_ingested=replicate)
        return app

    async with TestClient(TestServer(app_for("hospital-1"), host="127.0.0.1", port=0)) as a, \
            TestClient(TestServer(app_for("hospital-2"), host="127.0.0.1", port=0)) as b:
        body = await _upload(a, DATA)
        from pienode.files.cid import CID

        assert stores["hospital-2"].has_root(CID.parse(body["cid"]))
        down.add("hospital-1")
        r = await b.get(f"/files/{body['cid']}")
        assert r.status == 200 and await r.read() == DATA
        r = await b.get(f"/files/{body['cid']}", headers={"Range": "bytes=300000-300009"})
        assert r.status == 206 and await r.read() == DATA[300000:300010]
        r = await b.get(f"/files/{cid_of_bytes(b'nowhere')}")
        assert r.status == 404
    for s in stores.values():
        s.close()


async def test_serves_from_peer_without_local_copy(tmp_path: Path) -> None:
    from pienode.files.exchange import BlockExchange
    from pienode.files.stream import ingest

    sa, sb = PackStore(tmp_path / "a"), PackStore(tmp_path / "b")
    exchanges: dict[str, BlockExchange] = {}

    async def req_from_b(peer: str, payload: bytes, timeout: float) -> bytes:
        payload = bytes(payload)  # the link sends Parts back to back
        return await exchanges["a"].handle_request("b", payload)

    exchanges["a"] = BlockExchange(sa, req_from_b, lambda: [], node_id="a")
    exchanges["b"] = BlockExchange(sb, req_from_b, lambda: ["a"], node_id="b")

    async def gen():
        yield DATA

    info = await ingest(sa, gen(), 1 << 30)
    app = web.Application()
    add_file_routes(app, lambda: sb, source_getter=lambda: exchanges["b"])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as b:
        r = await b.get(f"/files/{info.cid}")
        assert r.status == 200 and await r.read() == DATA
    assert exchanges["b"].blocks_fetched >= 4
    sa.close()
    sb.close()


async def test_admin_routes_ls_stat_pin_gc_verify(tmp_path: Path) -> None:
    from pienode.files.http import add_file_admin_routes

    store = PackStore(tmp_path / "files")
    referenced: list[str] = []

    async def refs() -> list[str]:
        return referenced

    app = web.Application()
    add_file_routes(app, lambda: store, max_bytes=MAX)
    add_file_admin_routes(app, lambda: store, refs, grace_seconds=0)
    rng = random.Random(8)
    a, b, c = (rng.randbytes(CHUNK_SIZE + 10 * i + 1) for i in range(3))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as cl:
        ca, cb, cc = [(await _upload(cl, x))["cid"] for x in (a, b, c)]
        listing = (await (await cl.get("/files")).json())["files"]
        assert sorted(e["cid"] for e in listing) == sorted([ca, cb, cc])
        st = await (await cl.get(f"/files/{ca}/stat")).json()
        assert st == {"cid": ca, "size": len(a), "complete": True, "pinned": False}
        assert (await cl.get("/files/nope/stat")).status == 400
        assert (await cl.get(f"/files/{cid_of_bytes(b'x')}/stat")).status == 404
        r = await cl.put(f"/files/{cb}/pin")
        assert (await r.json())["pinned"] is True
        referenced.append(ca)
        res = await (await cl.post("/files/gc")).json()
        assert res["roots_dropped"] == 1 and res["blocks_removed"] == 3
        assert (await cl.get(f"/files/{cc}")).status == 404
        assert await (await cl.get(f"/files/{ca}")).read() == a
        assert await (await cl.get(f"/files/{cb}")).read() == b
        assert (await (await cl.post("/files/verify")).json())["ok"] is True
        await cl.delete(f"/files/{cb}/pin")
        await cl.post("/files/gc")
        assert (await cl.get(f"/files/{cb}")).status == 404
    store.close()


async def test_large_upload_reads_in_big_pieces_then_gives_the_connection_its_read_size_back(tmp_path: Path) -> None:
    """While a large body streams in, the socket is read 1 MiB at a time (fewer copies at
    ingest); the next request on the same keep-alive connection reads at asyncio's size."""
    from pienode.files import http as files_http

    store = PackStore(tmp_path / "files")
    app = web.Application()
    add_file_routes(app, lambda: store, max_bytes=16 * CHUNK_SIZE)
    seen: list[int] = []

    async def read_size(request: web.Request) -> web.Response:
        seen.append(request.transport.max_size)  # type: ignore[union-attr]
        return web.json_response({})

    app.router.add_get("/read-size", read_size)
    data = random.Random(5).randbytes(files_http.UPLOAD_RECV_SIZE * 3 + 77)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        body = await _upload(c, data)
        assert body["cid"] == str(cid_of_bytes(data))
        r = await c.get("/read-size")
        assert r.status == 200
        r = await c.get(f"/files/{body['cid']}")
        assert await r.read() == data
    store.close()
    import asyncio

    assert seen == [asyncio.selector_events._SelectorSocketTransport.max_size]
