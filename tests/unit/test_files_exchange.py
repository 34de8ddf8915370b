"""Block exchange over an in-memory network of four stores: fetch, repair, replicate."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pienode.encoding import pack, unpack
from pienode.errors import NetError
from pienode.files.cid import CID
from pienode.files.exchange import BlockExchange, ExchangeConfig, handle_request
from pienode.files.store import BlockMissing, PackStore
from pienode.files.stream import ingest, read
from pienode.files.unixfs import CHUNK_SIZE, cid_of_bytes
from pienode.storage.kv import MemoryKV

DATA = random.Random(11).randbytes(20 * CHUNK_SIZE + 99)


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1 << 20):
        yield data[i : i + (1 << 20)]


class FakeNet:
    """Routes ``request(peer, payload)`` to the peer's handler through the real codec;
    peers in ``down`` fail like a broken link, peers in ``liars`` flip a byte of each block."""

    def __init__(self) -> None:
        self.nodes: dict[str, BlockExchange] = {}
        self.down: set[str] = set()
        self.liars: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    def requester(self, me: str):
        async def request(peer: str, payload: bytes, timeout: float) -> bytes:
            payload = bytes(payload)  # the link sends Parts back to back
            self.asked.append((me, peer))
            if peer in self.down:
                raise NetError("link down", peer=peer)
            answer = await self.nodes[peer].handle_request(me, payload)
            if peer in self.liars:
                msg = unpack(answer)
                if "blocks" in msg:
                    msg["blocks"] = [b and bytes([b[0] ^ 1]) + b[1:] for b in msg["blocks"]]
                    answer = pack(msg)
            return answer

        return request


@pytest.fixture
def net(tmp_path: Path):
    n = FakeNet()
    ids = [f"hospital-{i}" for i in range(1, 5)]
    stores = []
    for i in ids:
        s = PackStore(tmp_path / i, kv=MemoryKV())
        stores.append(s)
        n.nodes[i] = BlockExchange(
            s, n.requester(i), lambda: list(ids), ExchangeConfig(replication=3), node_id=i
        )
    yield n
    for s in stores:
        s.close()


async def _read_all(ex: BlockExchange, cid: str, start: int = 0, end: int | None = None) -> bytes:
    out = bytearray()
    async for piece in read(ex.store, cid, start, end, source=ex):
        out += piece
    return bytes(out)


async def test_read_through_peers_from_empty_store(net: FakeNet) -> None:
    a, b = net.nodes["hospital-1"], net.nodes["hospital-2"]
    info = await ingest(a.store, _pieces(DATA), 1 << 30)
    assert await _read_all(b, info.cid) == DATA
    assert await _read_all(b, info.cid, 5 * CHUNK_SIZE - 1, 5 * CHUNK_SIZE + 1) == DATA[
        5 * CHUNK_SIZE - 1 : 5 * CHUNK_SIZE + 1
    ]
    assert b.blocks_fetched >= 21


async def test_fetch_spreads_over_several_peers(net: FakeNet) -> None:
    for i in (1, 2, 3):
        await ingest(net.nodes[f"hospital-{i}"].store, _pieces(DATA), 1 << 30)
    d = net.nodes["hospital-4"]
    root = CID.parse(str(cid_of_bytes(DATA)))
    assert await d.fetch_dag(root) == len(DATA)
    asked = {peer for me, peer in net.asked if me == "hospital-4"}
    assert len(asked) >= 2
    assert d.store.has_root(root)
    net.down.update({"hospital-1", "hospital-2", "hospital-3"})
    assert await _read_all(d, str(root)) == DATA


async def test_liar_and_dead_peers_are_routed_around(net: FakeNet) -> None:
    for i in (1, 2):
        await ingest(net.nodes[f"hospital-{i}"].store, _pieces(DATA), 1 << 30)
    net.liars.add("hospital-1")
    net.down.add("hospital-3")
    d = net.nodes["hospital-4"]
    root = CID.parse(str(cid_of_bytes(DATA)))
    # The liar is asked first, so every block must be routed around it.
    assert await d.fetch_dag(root, prefer=["hospital-1"]) == len(DATA)
    assert d.bad_blocks_from_peers >= 1  # at least the root, asked of the liar alone
    assert await _read_all(d, str(root)) == DATA
    assert d.peer_failures == sum(1 for me, p in net.asked if (me, p) == ("hospital-4", "hospital-3"))


async def test_missing_everywhere_is_reported(net: FakeNet) -> None:
    d = net.nodes["hospital-4"]
    with pytest.raises(BlockMissing):
        await d.fetch_dag(CID.parse(str(cid_of_bytes(b"nobody has this"))))
    with pytest.raises(BlockMissing):
        await _read_all(d, str(cid_of_bytes(b"nobody has this")))


async def test_replicate_to_k_peers_then_origin_dies(net: FakeNet) -> None:
    a = net.nodes["hospital-1"]
    info = await ingest(a.store, _pieces(DATA), 1 << 30)
    res = await a.replicate(info)
    assert len(res.confirmed) == 3 and not res.failed
    root = CID.parse(info.cid)
    for p in res.confirmed:
        assert net.nodes[p].store.has_root(root)
    net.down.add("hospital-1")
    assert await _read_all(net.nodes["hospital-3"], info.cid) == DATA


async def test_replicate_skips_failed_peer_and_counts(net: FakeNet) -> None:
    a = net.nodes["hospital-1"]
    info = await ingest(a.store, _pieces(DATA), 1 << 30)
    net.down.add("hospital-2")
    res = await a.replicate(info, k=2)
    assert len(res.confirmed) == 2 and "hospital-2" in res.failed
    assert "hospital-2" not in res.confirmed


async def test_serve_side_handles_bad_input(net: FakeNet, tmp_path: Path) -> None:
    store = net.nodes["hospital-1"].store
    info = await ingest(store, _pieces(DATA[:1000]), 1 << 30)
    cid = CID.parse(info.cid)
    ans = unpack(await handle_request(store, pack({"op": "get", "cids": [cid.to_bytes()]})))
    assert ans == {"blocks": [DATA[:1000]]}
    ans = unpack(await handle_request(store, pack({"op": "has", "cids": [cid.to_bytes()]})))
    assert ans == {"have": [True]}
    for bad in (pack({"op": "get", "cids": [b"\x00junk"]}), pack([1, 2]), b"\xc1"):
        answer = unpack(await net.nodes["hospital-1"].handle_request("x", bad))
        assert answer["ok"] is False


async def test_fetch_dag_replaces_damaged_internal_node(net: FakeNet) -> None:
    from pienode.files.admin import verify
    from pienode.files.store import _LOC

    a, d = net.nodes["hospital-1"], net.nodes["hospital-4"]
    info = await ingest(a.store, _pieces(DATA), 1 << 30)
    await ingest(d.store, _pieces(DATA), 1 << 30)
    root = CID.parse(info.cid)
    pack, off, n = _LOC.unpack(d.store._kv.get(b"B" + root.digest))
    path = d.store.directory / "packs" / f"{pack:08d}.pack"
    with path.open("r+b") as f:
        f.seek(off + 3)
        f.write(b"\xff\xff")
    assert not verify(d.store).ok
    assert await d.fetch_dag(root) == len(DATA)
    assert verify(d.store).ok
    assert d.store.stats().blocks == a.store.stats().blocks


async def test_replicated_one_block_file_keeps_its_size(net: FakeNet) -> None:
    """A file under one chunk is a single raw leaf (bafk...): replicas must record its real
    size, or they serve it as an empty file (found by the 4-hospital demo)."""
    small = random.Random(7).randbytes(CHUNK_SIZE // 3)
    a = net.nodes["hospital-1"]
    info = await ingest(a.store, _pieces(small), 1 << 30)
    assert info.cid.startswith("bafk")
    res = await a.replicate(info)
    assert len(res.confirmed) == 3
    for p in res.confirmed:
        assert net.nodes[p].store.file_size(CID.parse(info.cid)) == len(small)
        assert await _read_all(net.nodes[p], info.cid) == small
