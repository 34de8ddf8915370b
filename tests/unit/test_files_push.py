"""Streaming push replication (issue 4): an upload is copied to the acknowledging hospital
while it is ingested; the replica verifies every block, and nothing is visible there before
the DAG is complete and durable."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pienode.encoding import pack, unpack
from pienode.errors import FileStoreError, NetError
from pienode.files.cid import CID
from pienode.files.exchange import BlockExchange, ExchangeConfig
from pienode.files.push import PushConfig, decode_push, encode_push
from pienode.files.store import FileInfo, PackStore
from pienode.files.stream import IngestSink, ingest, read
from pienode.files.unixfs import CHUNK_SIZE, cid_of_bytes

# 190 leaves: more than one internal node (174 links each), so the DAG has two levels.
DATA = random.Random(7).randbytes(190 * CHUNK_SIZE + 12345)
SMALL_PUSH = PushConfig(push_bytes=3 * CHUNK_SIZE, inflight=2, idle_timeout=30.0)


async def _pieces(data: bytes, piece: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


class Net:
    """In-memory files channel between exchanges. ``tamper[peer]`` rewrites each push frame
    sent to ``peer``; ``drop_push[peer]`` loses the n-th push frame sent to it; peers in
    ``down`` fail like a broken link."""

    def __init__(self, tmp_path: Path, n: int = 3, push: PushConfig = SMALL_PUSH) -> None:
        self.ids = [f"hospital-{i}" for i in range(1, n + 1)]
        self.stores = {i: PackStore(tmp_path / i) for i in self.ids}
        self.nodes: dict[str, BlockExchange] = {}
        self.down: set[str] = set()
        self.tamper: dict[str, object] = {}
        self.drop_push: dict[str, int] = {}
        self.pushes_seen: dict[str, int] = {}
        for i in self.ids:
            self.nodes[i] = BlockExchange(self.stores[i], self.requester(i), lambda: list(self.ids),
                                          ExchangeConfig(replication=1, push=push), node_id=i)

    def requester(self, me: str):
        async def request(peer: str, payload: bytes, timeout: float) -> bytes:
            payload = bytes(payload)  # the link sends Parts back to back
            if peer in self.down:
                raise NetError("link down", peer=peer)
            if payload[:1] == b"\xc1":
                k = self.pushes_seen[peer] = self.pushes_seen.get(peer, 0) + 1
                if self.drop_push.get(peer) == k:
                    return pack({"ok": True})  # lost on the way, but the sender thinks it arrived
                if peer in self.tamper:
                    payload = self.tamper[peer](payload)  # type: ignore[operator]
            return await self.nodes[peer].handle_request(me, payload)

        return request

    def close(self) -> None:
        for s in self.stores.values():
            s.close()


@pytest.fixture
def net(tmp_path: Path):
    n = Net(tmp_path)
    yield n
    n.close()


async def _read_all(store: PackStore, cid: str) -> bytes:
    out = bytearray()
    async for piece in read(store, cid):
        out += piece
    return bytes(out)


def test_push_frame_round_trip_and_malformed_frames() -> None:
    blocks = [(cid_of_bytes(b"a"), b"a"), (cid_of_bytes(b"bc"), b"bc")]
    sid, got = decode_push(encode_push(b"s" * 16, blocks))
    assert sid == b"s" * 16
    assert [(c, bytes(d)) for c, d in got] == blocks
    frame = encode_push(b"s" * 16, blocks)
    for bad in (frame[:-1], frame + b"x", frame[:10], b"\x00" + frame[1:]):
        with pytest.raises(FileStoreError):
            decode_push(bad)


async def test_pushed_copy_is_complete_durable_and_identical(net: Net) -> None:
    origin, replica = net.nodes["hospital-1"], net.nodes["hospital-2"]
    sink = origin.push_to(["hospital-2"])
    info = await ingest(origin.store, _pieces(DATA), 1 << 30, sink=sink)
    assert info.cid == str(cid_of_bytes(DATA))
    assert sink.confirmed == ("hospital-2",) and not sink.failed
    assert replica.store.has_root(CID.parse(info.cid))
    assert await _read_all(replica.store, info.cid) == DATA
    assert replica.pushes.sessions() == 0 and replica.pushes.sessions_committed == 1
    assert replica.blocks_fetched == 0  # all of it was pushed: nothing pulled
    # Survives a reopen: committed, not just written.
    path = replica.store.directory
    replica.store.close()
    again = PackStore(path)
    try:
        assert again.has_root(CID.parse(info.cid))
        assert await _read_all(again, info.cid) == DATA
    finally:
        again.close()
        net.stores["hospital-2"] = PackStore(path)  # for the fixture's close


async def test_replica_refuses_a_pushed_block_with_wrong_bytes(net: Net) -> None:
    origin, replica = net.nodes["hospital-1"], net.nodes["hospital-2"]

    def flip_last_byte(payload: bytes) -> bytes:
        return payload[:-1] + bytes([payload[-1] ^ 1])

    net.tamper["hospital-2"] = flip_last_byte
    sink = origin.push_to(["hospital-2"])
    info = await ingest(origin.store, _pieces(DATA), 1 << 30, sink=sink)
    assert sink.confirmed == () and "hospital-2" in sink.failed
    assert "does not match its CID" in sink.failed["hospital-2"]
    assert replica.pushes.bad_blocks >= 1
    assert replica.pushes.sessions() == 0  # frames still in flight did not reopen it
    assert not replica.store.has_root(CID.parse(info.cid))
    st = replica.store.stats()
    assert st.blocks == 0 and st.pack_bytes == 0  # the session's bytes were cut away
    # Refused directly too: a frame whose block does not hash to its CID.
    frame = encode_push(b"t" * 16, [(cid_of_bytes(b"good"), b"evil")])
    answer = unpack(await replica.handle_request("hospital-3", frame))
    assert answer["ok"] is False and "does not match" in answer["error"]
    assert replica.store.stats().blocks == 0


async def test_lost_push_is_pulled_at_commit(net: Net) -> None:
    origin, replica = net.nodes["hospital-1"], net.nodes["hospital-2"]
    net.drop_push["hospital-2"] = 5
    sink = origin.push_to(["hospital-2"])
    info = await ingest(origin.store, _pieces(DATA), 1 << 30, sink=sink)
    assert sink.confirmed == ("hospital-2",), sink.failed
    assert replica.blocks_fetched == 3  # the lost frame's blocks, pulled from the origin
    assert await _read_all(replica.store, info.cid) == DATA


async def test_nothing_visible_on_the_replica_before_commit(net: Net) -> None:
    origin, replica = net.nodes["hospital-1"], net.nodes["hospital-2"]
    root = cid_of_bytes(DATA)
    seen_during: list[bool] = []

    class Watching(IngestSink):
        def __init__(self) -> None:
            self.inner = origin.push_to(["hospital-2"])

        async def send(self, blocks):  # type: ignore[no-untyped-def]
            await self.inner.send(blocks)
            seen_during.append(replica.store.has_root(root) or replica.store.stats().blocks > 0)

        async def finish(self, root: CID, size: int) -> tuple[str, ...]:
            await asyncio.gather(*list(self.inner._tasks))
            seen_during.append(replica.store.stats().blocks > 0)
            return await self.inner.finish(root, size)

        async def abort(self) -> None:
            await self.inner.abort()

    await ingest(origin.store, _pieces(DATA), 1 << 30, sink=Watching())
    assert seen_during and not any(seen_during)
    assert replica.store.has_root(root)


async def test_failed_upload_drops_the_replica_session(net: Net) -> None:
    origin, replica = net.nodes["hospital-1"], net.nodes["hospital-2"]

    async def broken() -> AsyncIterator[bytes]:
        yield DATA[: 40 * CHUNK_SIZE]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await ingest(origin.store, broken(), 1 << 30, sink=origin.push_to(["hospital-2"]))
    assert replica.pushes.sessions() == 0
    st = replica.store.stats()
    assert st.blocks == 0 and st.pack_bytes == 0 and st.roots == 0


async def test_idle_session_expires_and_leaves_nothing(tmp_path: Path) -> None:
    n = Net(tmp_path, push=PushConfig(push_bytes=CHUNK_SIZE, idle_timeout=0.2))
    try:
        replica = n.nodes["hospital-2"]
        frame = encode_push(b"i" * 16, [(cid_of_bytes(DATA[:CHUNK_SIZE]), DATA[:CHUNK_SIZE])])
        assert unpack(await replica.handle_request("hospital-1", frame))["ok"] is True
        assert replica.pushes.sessions() == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while replica.pushes.sessions():
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert replica.store.stats().pack_bytes == 0
        # Its sender can no longer commit it.
        msg = pack({"op": "push-commit", "sid": b"i" * 16, "root": cid_of_bytes(DATA[:CHUNK_SIZE]).to_bytes(),
                    "size": CHUNK_SIZE})
        assert unpack(await replica.handle_request("hospital-1", msg))["ok"] is False
    finally:
        n.close()


async def test_one_peer_cannot_commit_or_abort_anothers_session(net: Net) -> None:
    replica = net.nodes["hospital-2"]
    leaf = DATA[:CHUNK_SIZE]
    cid = cid_of_bytes(leaf)
    frame = encode_push(b"p" * 16, [(cid, leaf)])
    assert unpack(await replica.handle_request("hospital-1", frame))["ok"] is True
    commit = pack({"op": "push-commit", "sid": b"p" * 16, "root": cid.to_bytes(), "size": len(leaf)})
    assert unpack(await replica.handle_request("hospital-3", commit))["ok"] is False
    await replica.handle_request("hospital-3", pack({"op": "push-abort", "sid": b"p" * 16}))
    assert replica.pushes.sessions() == 1
    assert unpack(await replica.handle_request("hospital-1", commit))["ok"] is True
    assert replica.store.has_root(cid)


async def test_commit_refuses_sizes_that_do_not_add_up(net: Net) -> None:
    replica = net.nodes["hospital-2"]
    leaf = DATA[:CHUNK_SIZE]
    cid = cid_of_bytes(leaf)
    await replica.handle_request("hospital-1", encode_push(b"z" * 16, [(cid, leaf)]))
    commit = pack({"op": "push-commit", "sid": b"z" * 16, "root": cid.to_bytes(), "size": len(leaf) + 1})
    answer = unpack(await replica.handle_request("hospital-1", commit))
    assert answer["ok"] is False
    assert not replica.store.has_root(cid) and replica.store.stats().pack_bytes == 0


class Service:
    """The acknowledgement policy of ``FileService`` over the in-memory net: push to one
    peer, fall back to a pull by another if the push fails."""

    def __init__(self, net: Net, me: str, push_peer: str) -> None:
        self.net, self.me, self.push_peer = net, me, push_peer
        self.gate: asyncio.Event | None = None

    async def open_upload(self) -> IngestSink | None:
        return self.net.nodes[self.me].push_to([self.push_peer])

    async def acknowledge(self, info: FileInfo, sink: IngestSink | None) -> None:
        from pienode.files.push import PushReplication

        assert isinstance(sink, PushReplication)
        confirmed = list(sink.confirmed)
        if not confirmed:
            res = await self.net.nodes[self.me].replicate(info, 1, exclude=[self.push_peer])
            confirmed += res.confirmed
        if not confirmed:
            raise FileStoreError("no other hospital confirmed a copy")


async def _upload(net: Net, svc: Service, data: bytes) -> tuple[int, dict]:
    app = web.Application()
    from pienode.files.http import add_file_routes

    add_file_routes(app, lambda: net.stores[svc.me], max_bytes=1 << 30, replication=svc)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        r = await c.post("/files", data=data)
        return r.status, await r.json()


async def test_ack_comes_only_after_the_replica_holds_every_block(net: Net) -> None:
    replica = net.nodes["hospital-2"]
    gate = asyncio.Event()
    real = replica.pushes.on_commit

    async def slow_commit(*args):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await real(*args)

    replica.pushes.on_commit = slow_commit  # type: ignore[method-assign]
    task = asyncio.ensure_future(_upload(net, Service(net, "hospital-1", "hospital-2"), DATA))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    root = cid_of_bytes(DATA)
    while not net.stores["hospital-1"].has_root(root):  # stored at the origin...
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert not task.done()  # ...but no acknowledgement while the replica has not committed
    gate.set()
    status, body = await task
    assert status == 200 and body["cid"] == str(root)
    assert replica.store.has_root(root)


async def test_failed_push_falls_back_to_a_pull_by_another_hospital(net: Net) -> None:
    net.down.add("hospital-2")
    status, body = await _upload(net, Service(net, "hospital-1", "hospital-2"), DATA)
    assert status == 200
    assert net.stores["hospital-3"].has_root(CID.parse(body["cid"]))


async def test_no_ack_when_no_other_hospital_can_hold_it(net: Net) -> None:
    net.down |= {"hospital-2", "hospital-3"}
    status, body = await _upload(net, Service(net, "hospital-1", "hospital-2"), DATA)
    assert status >= 500 and "confirmed" in body["error"]


async def test_background_pulls_wait_while_the_node_pushes_an_upload(net: Net) -> None:
    origin = net.nodes["hospital-1"]
    leaf = DATA[:CHUNK_SIZE]
    await ingest(origin.store, _pieces(leaf), 1 << 30)
    cid = cid_of_bytes(leaf)
    sink = origin.push_to(["hospital-2"])  # an upload under way at hospital-1
    bulk = asyncio.ensure_future(net.nodes["hospital-3"]._ask("hospital-1", [cid], bulk=True))
    urgent = await net.nodes["hospital-2"]._ask("hospital-1", [cid])
    assert urgent == {cid: leaf}  # a read for a user is served at once
    done, _ = await asyncio.wait([bulk], timeout=0.3)
    assert not done  # background replication waits for the upload...
    await sink.abort()
    assert await asyncio.wait_for(bulk, 5) == {cid: leaf}  # ...and goes on once it ends


async def test_small_file_travels_with_the_commit(net: Net) -> None:
    origin, replica = net.nodes["hospital-1"], net.nodes["hospital-2"]
    data = DATA[: CHUNK_SIZE + 99]  # two leaves and their node: under one frame
    sink = origin.push_to(["hospital-2"])
    info = await ingest(origin.store, _pieces(data), 1 << 30, sink=sink)
    assert sink.confirmed == ("hospital-2",)
    assert net.pushes_seen.get("hospital-2", 0) == 0  # no separate push frame: one round trip
    assert await _read_all(replica.store, info.cid) == data
    # The frame riding on a commit is verified like any push.
    leaf = DATA[:CHUNK_SIZE]
    bad = encode_push(b"q" * 16, [(cid_of_bytes(leaf), leaf[:-1] + b"!")])
    commit = pack({"op": "push-commit", "sid": b"q" * 16, "root": cid_of_bytes(leaf).to_bytes(),
                   "size": len(leaf), "frame": bad})
    answer = unpack(await replica.handle_request("hospital-1", commit))
    assert answer["ok"] is False and not replica.store.has_root(cid_of_bytes(leaf))


async def test_a_late_push_does_not_reopen_a_dropped_session(net: Net) -> None:
    replica = net.nodes["hospital-2"]
    a, b = DATA[:CHUNK_SIZE], DATA[CHUNK_SIZE : 2 * CHUNK_SIZE]
    assert unpack(await replica.handle_request("hospital-1", encode_push(b"d" * 16, [(cid_of_bytes(a), a)])))["ok"]
    await replica.handle_request("hospital-1", pack({"op": "push-abort", "sid": b"d" * 16}))
    late = unpack(await replica.handle_request("hospital-1", encode_push(b"d" * 16, [(cid_of_bytes(b), b)])))
    assert late["ok"] is False and replica.pushes.sessions() == 0
    assert replica.store.stats().pack_bytes == 0
