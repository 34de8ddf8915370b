"""``GET /records/{id}/content`` and the client's one-round-trip download, on a real node.

Who checks what: with ``X-Pie-Verify: client`` the node serves its stored blocks unhashed,
and the client authenticates every chunk (AES-GCM) and rebuilds the CID; without it the
node checks every block (and repairs a damaged one from a peer) before serving it.
"""

from __future__ import annotations

import dataclasses
import json
import os

import aiohttp
import pytest

from pienode.client import emr
from pienode.client.session import Session
from pienode.errors import PieError, ValidationError
from pienode.files.cid import CID
from pienode.files.unixfs import CHUNK_SIZE
from tests.integration.conftest import RunningNode, make_cluster_dir
from tests.integration.test_sharing import register

SIZE = 3 * CHUNK_SIZE + 1234  # four ciphertext leaves


@pytest.fixture
async def world(tmp_path):
    home = make_cluster_dir(tmp_path / "cluster", 1)[0]
    rn = await RunningNode(home).start()
    async with aiohttp.ClientSession() as http:
        rn.http = http
        rn.pat = await register(http, rn.url, tmp_path / "w" / "pat", "patient", "Pat Content")
        rn.phy = await register(http, rn.url, tmp_path / "w" / "phy", "physician", "Dr Content")
        rn.src = tmp_path / "record.bin"
        rn.src.write_bytes(os.urandom(SIZE))
        async with Session(rn.phy, rn.url) as s:
            rn.rec = await emr.upload(s, rn.pat.user_id, rn.src, "omics", {"t": "content"})
        rn.tmp = tmp_path
        yield rn
    await rn.stop()


def _split(body: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(body[:4], "big")
    return json.loads(body[4 : 4 + n]), body[4 + n :]


async def _get(rn, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    async with rn.http.get(rn.url + path, headers=headers or {}) as r:
        return r.status, await r.read(), dict(r.headers)


async def test_content_is_the_record_then_its_file(world, monkeypatch):
    from pienode.files import stream

    rn = world
    rid, cid = rn.rec["record_id"], rn.rec["cid"]
    _, rec_json, _ = await _get(rn, f"/records/{rid}")
    _, stored, _ = await _get(rn, f"/files/{cid}")
    assert len(stored) == rn.rec["stored_bytes"]
    for small_limit in (stream.SMALL_FILE, 0):  # read at once, and streamed
        monkeypatch.setattr(stream, "SMALL_FILE", small_limit)
        monkeypatch.setattr(stream, "INLINE_READ", min(small_limit, stream.INLINE_READ))
        monkeypatch.setattr(stream, "SPANS_MAX", min(small_limit, stream.SPANS_MAX))
        for verify in ({}, {"X-Pie-Verify": "client"}):
            status, body, headers = await _get(rn, f"/records/{rid}/content", verify)
            assert status == 200, body[:200]
            assert headers["Content-Type"] == "application/vnd.pie.record-content"
            assert int(headers["Content-Length"]) == len(body)
            rec, ciphertext = _split(body)
            assert rec == json.loads(rec_json)
            assert ciphertext == stored
            status, body, _ = await _get(rn, f"/files/{cid}", verify)
            assert status == 200 and body == stored


async def test_unknown_record_is_a_clear_404(world):
    rn = world
    status, body, _ = await _get(rn, "/records/rec-nope/content")
    assert status == 404 and json.loads(body)["kind"] == "NotFound"
    async with Session(rn.pat, rn.url) as s:
        with pytest.raises(ValidationError, match="no record rec-nope"):
            await emr.fetch(s, "rec-nope", rn.tmp / "nope.bin")
    assert not (rn.tmp / "nope.bin").exists()


async def test_off_loopback_the_content_needs_a_signed_request(world):
    rn = world
    node = rn.node
    node.cfg = dataclasses.replace(node.cfg, api=dataclasses.replace(node.cfg.api, trust_loopback=False))
    path = f"/records/{rn.rec['record_id']}/content"
    status, body, _ = await _get(rn, path)
    assert status == 403 and b"signed" in body
    async with Session(rn.pat, rn.url) as s:
        status, body, _ = await _get(rn, path, s.headers("GET", path, None))
        assert status == 200 and _split(body)[1] == (await _get(rn, f"/files/{rn.rec['cid']}",
                                                                s.headers("GET", f"/files/{rn.rec['cid']}", None)))[1]
        got = await emr.fetch(s, rn.rec["record_id"], rn.tmp / "signed.bin")
    assert got["size"] == SIZE and (rn.tmp / "signed.bin").read_bytes() == rn.src.read_bytes()


def _damage_leaf(rn, index: int) -> tuple[CID, bytes]:
    """Flip one stored byte of ciphertext leaf ``index``; returns the leaf and its good bytes."""
    from pienode.files.dagpb import decode_node
    from pienode.files.store import _LOC

    store = rn.node.files.store
    leaf = decode_node(store.get_block(CID.parse(rn.rec["cid"]))).links[index].cid
    good = store.get_block(leaf)
    pack, off, n = _LOC.unpack(store._kv.get(b"B" + leaf.digest))
    with (store.directory / "packs" / f"{pack:08d}.pack").open("r+b") as f:
        f.seek(off + n // 2)
        b = f.read(1)
        f.seek(off + n // 2)
        f.write(bytes([b[0] ^ 0x01]))
    return leaf, good


async def test_a_damaged_block_never_passes_as_valid(world):
    rn = world
    rid, cid = rn.rec["record_id"], rn.rec["cid"]
    _, stored, _ = await _get(rn, f"/files/{cid}")
    _damage_leaf(rn, 2)
    # A client that cannot check gets an error, never the damaged bytes.
    status, body, _ = await _get(rn, f"/files/{cid}")
    assert status == 500 and json.loads(body)["kind"] == "BlockDamaged"
    status, body, _ = await _get(rn, f"/records/{rid}/content")
    assert status == 500 and json.loads(body)["kind"] == "BlockDamaged"
    # One that checks gets the stored bytes as they are...
    status, body, _ = await _get(rn, f"/records/{rid}/content", {"X-Pie-Verify": "client"})
    assert status == 200 and _split(body)[1] != stored and len(_split(body)[1]) == len(stored)
    # ...and catches the damage: with no peer to repair from, a clear error and no file.
    out = rn.tmp / "damaged.bin"
    async with Session(rn.pat, rn.url) as s:
        with pytest.raises(PieError, match="could not serve"):
            await emr.fetch(s, rid, out)
    assert not out.exists() and not list(out.parent.glob(".damaged.bin.*"))


async def test_client_catches_damage_and_the_node_repairs_on_the_second_ask(world):
    rn = world
    rid = rn.rec["record_id"]
    leaf, good = _damage_leaf(rn, 1)
    asked: list[CID] = []

    class Peer:  # another hospital holding a good copy
        async def fetch_blocks(self, cids: list[CID]) -> dict[CID, bytes]:
            asked.extend(cids)
            return {c: good for c in cids if c == leaf}

    rn.node.files.exchange = Peer()
    out = rn.tmp / "repaired.bin"
    async with Session(rn.pat, rn.url) as s:
        got = await emr.fetch(s, rid, out)
    assert got["via"] == "own key" and out.read_bytes() == rn.src.read_bytes()
    assert asked == [leaf]
    assert rn.node.files.store.stats().chunks_repaired == 1
    assert rn.node.files.store.get_block(leaf) == good


async def test_small_records_come_whole_on_one_kept_alive_connection(world, monkeypatch):
    from pienode.client import download, rawget

    rn = world
    connections: list[object] = []
    orig = rawget.RawGetter._connection

    async def spy(self, limit):
        proto = await orig(self, limit)
        connections.append(proto)
        return proto

    monkeypatch.setattr(rawget.RawGetter, "_connection", spy)
    streamed: list[str] = []
    orig_streamed = download._fetch_streamed

    async def spy_streamed(s, record_id, path, out):
        streamed.append(record_id)
        return await orig_streamed(s, record_id, path, out)

    monkeypatch.setattr(download, "_fetch_streamed", spy_streamed)
    async with Session(rn.pat, rn.url) as s:
        for i in range(3):
            got = await emr.fetch(s, rn.rec["record_id"], rn.tmp / f"lean{i}.bin")
            assert got["size"] == SIZE and (rn.tmp / f"lean{i}.bin").read_bytes() == rn.src.read_bytes()
        assert streamed == []  # all three through the lean path...
        assert len(connections) == 3 and len({id(c) for c in connections}) == 1  # ...on one connection
        # Larger than the lean path takes: streamed through aiohttp, same checks, same file.
        monkeypatch.setattr(download, "LEAN_LIMIT", 1000)
        got = await emr.fetch(s, rn.rec["record_id"], rn.tmp / "streamed.bin")
        assert streamed == [rn.rec["record_id"]]
        assert (rn.tmp / "streamed.bin").read_bytes() == rn.src.read_bytes()
        # The node drops the kept-alive connection: the next fetch reconnects by itself.
        monkeypatch.setattr(download, "LEAN_LIMIT", 64 << 20)
        s.raw_getter().close()
        got = await emr.fetch(s, rn.rec["record_id"], rn.tmp / "again.bin")
        assert (rn.tmp / "again.bin").read_bytes() == rn.src.read_bytes() and len(streamed) == 1


async def test_the_lean_path_refuses_what_it_does_not_handle(tmp_path):
    import asyncio

    from pienode.client.rawget import RawGetter, Unsupported

    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n",  # more than the caller takes
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server hangs up
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = RawGetter(f"http://127.0.0.1:{port}")
    try:
        for _ in range(2):
            with pytest.raises(Unsupported):
                async with raw.get("/x", {}, 1 << 20):
                    pass
        with pytest.raises(Unsupported):
            async with raw.get("/x", {}, 1 << 20) as ans:
                await ans.received(ans.total)
        async with raw.get("/x", {"X-Test": "1"}, 1 << 20) as ans:
            assert ans.status == 200 and bytes(await ans.received(ans.total)) == b"hello"
    finally:
        raw.close()
        server.close()
        await server.wait_closed()
    with pytest.raises(Unsupported):
        RawGetter("https://127.0.0.1:1")
