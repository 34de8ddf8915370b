"""The pack store with LevelDB in a temp dir: ingest, ranged reads, durability, damage, gc."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pienode.errors import TooLarge
from pienode.files.admin import verify
from pienode.files.cid import CID
from pienode.directio import STAGE_BYTES
from pienode.files.store import BlockDamaged, BlockMissing, PackStore
from pienode.files.stream import ingest, read, stat
from pienode.files.unixfs import CHUNK_SIZE, cid_of_bytes


async def _pieces(data: bytes, size: int = 100_003) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _read_all(store: PackStore, cid: str, start: int = 0, end: int | None = None,
                    **kw: object) -> bytes:
    out = bytearray()
    async for piece in read(store, cid, start, end, **kw):  # type: ignore[arg-type]
        out += piece
    return bytes(out)


@pytest.fixture
def store(tmp_path: Path):
    s = PackStore(tmp_path / "files")
    yield s
    s.close()


DATA = random.Random(1).randbytes(5 * CHUNK_SIZE + 777)


async def test_ingest_gives_reference_cid_and_reads_back(store: PackStore) -> None:
    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    assert info.cid == str(cid_of_bytes(DATA))
    assert info.size == len(DATA)
    assert await _read_all(store, info.cid) == DATA
    assert await stat(store, info.cid) == len(DATA)
    assert store.has_root(CID.parse(info.cid))


@pytest.mark.parametrize(
    "start,end",
    [(0, 1), (5, 10), (CHUNK_SIZE - 3, CHUNK_SIZE + 3), (CHUNK_SIZE, 2 * CHUNK_SIZE),
     (len(DATA) - 1, len(DATA)), (3 * CHUNK_SIZE + 17, len(DATA)), (0, len(DATA))],
)
async def test_ranges_return_exact_bytes(store: PackStore, start: int, end: int) -> None:
    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    assert await _read_all(store, info.cid, start, end) == DATA[start:end]


async def test_range_reads_only_needed_leaves(store: PackStore) -> None:
    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    seen: list[CID] = []
    orig, orig_many = store.get_block, store.get_blocks

    def spy(cid: CID) -> bytes:
        seen.append(cid)
        return orig(cid)

    def spy_many(cids: list[CID], *, verify: bool = True) -> tuple[list[bytes | memoryview | None], list[int]]:
        seen.extend(cids)
        return orig_many(cids, verify=verify)

    store.get_block = spy  # type: ignore[method-assign]
    store.get_blocks = spy_many  # type: ignore[method-assign]
    assert await _read_all(store, info.cid, 2 * CHUNK_SIZE + 5, 2 * CHUNK_SIZE + 9) == DATA[
        2 * CHUNK_SIZE + 5 : 2 * CHUNK_SIZE + 9
    ]
    leaves = [c for c in seen if c.is_raw]
    assert leaves == [cid_of_bytes(DATA[2 * CHUNK_SIZE : 3 * CHUNK_SIZE])]


async def test_empty_and_tiny_files(store: PackStore) -> None:
    empty = await ingest(store, _pieces(b""), max_bytes=10)
    assert empty.cid == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert empty.size == 0 and await _read_all(store, empty.cid) == b""
    one = await ingest(store, _pieces(b"z"), max_bytes=10)
    assert await _read_all(store, one.cid) == b"z"
    assert await stat(store, one.cid) == 1


async def test_too_large_leaves_nothing_behind(tmp_path: Path) -> None:
    store = PackStore(tmp_path / "files")
    try:
        with pytest.raises(TooLarge):
            await ingest(store, _pieces(DATA), max_bytes=len(DATA) - 1)
        st = store.stats()
        assert st.blocks == 0 and st.roots == 0 and st.pack_bytes == 0
        assert not store.has(cid_of_bytes(DATA[:CHUNK_SIZE]))
    finally:
        store.close()


async def test_broken_upload_stream_leaves_nothing(store: PackStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield DATA[: 40 * CHUNK_SIZE // 10]
        yield DATA[:CHUNK_SIZE * 3]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await ingest(store, broken(), max_bytes=1 << 30)
    assert store.stats().pack_bytes == 0 and store.stats().blocks == 0


async def test_unknown_cid_is_missing(store: PackStore) -> None:
    with pytest.raises(BlockMissing):
        await stat(store, str(cid_of_bytes(b"never stored")))


async def test_survives_reopen_and_cuts_uncommitted_tail(tmp_path: Path) -> None:
    store = PackStore(tmp_path / "files")
    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    # A writer that died mid-upload: bytes appended (more than it stages), never committed.
    w = store.writer()
    pack_path = store.directory / "packs" / f"{w.pack:08d}.pack"
    committed_size = pack_path.stat().st_size
    half = [b"half%d" % i * 100_000 for i in range(STAGE_BYTES // 500_000 + 2)]
    for block in half:
        w.put(cid_of_bytes(block), block)
    size_with_tail = pack_path.stat().st_size
    assert size_with_tail > committed_size
    store.close()  # no commit, no abort: as after kill -9
    store = PackStore(tmp_path / "files")
    try:
        assert not pack_path.exists() or pack_path.stat().st_size == committed_size
        assert not any(store.has(cid_of_bytes(block)) for block in half)
        assert await _read_all(store, info.cid) == DATA
    finally:
        store.close()


def _damage_one_byte(store: PackStore, cid: CID) -> None:
    from pienode.files.store import _LOC

    pack, off, n = _LOC.unpack(store._kv.get(b"B" + cid.digest))
    path = store.directory / "packs" / f"{pack:08d}.pack"
    with path.open("r+b") as f:
        f.seek(off + n // 2)
        b = f.read(1)
        f.seek(off + n // 2)
        f.write(bytes([b[0] ^ 0x01]))


async def test_damaged_byte_detected_and_repaired_from_source(tmp_path: Path) -> None:
    store = PackStore(tmp_path / "a")
    other = PackStore(tmp_path / "b")
    try:
        info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
        await ingest(other, _pieces(DATA), max_bytes=1 << 30)
        leaf = cid_of_bytes(DATA[CHUNK_SIZE : 2 * CHUNK_SIZE])
        blocks_before = store.stats().blocks
        _damage_one_byte(store, leaf)
        with pytest.raises(BlockDamaged):
            store.get_block(leaf)
        report = verify(store)
        assert not report.ok and report.damaged == [str(leaf)]
        with pytest.raises(BlockDamaged):
            await _read_all(store, info.cid)

        class Peer:
            async def fetch_blocks(self, cids: list[CID]) -> dict[CID, bytes]:
                return {c: other.get_block(c) for c in cids if other.has(c)}

        assert await _read_all(store, info.cid, source=Peer()) == DATA
        assert store.stats().chunks_repaired == 1
        assert store.stats().blocks == blocks_before
        assert verify(store).ok
        assert store.get_block(leaf) == DATA[CHUNK_SIZE : 2 * CHUNK_SIZE]
        assert await _read_all(store, info.cid) == DATA
    finally:
        store.close()
        other.close()


async def test_gc_keeps_referenced_and_pinned_collects_rest(store: PackStore) -> None:
    rng = random.Random(9)
    a, b, c = (rng.randbytes(3 * CHUNK_SIZE + i) for i in range(3))
    ia = await ingest(store, _pieces(a), max_bytes=1 << 30)
    ib = await ingest(store, _pieces(b), max_bytes=1 << 30)
    ic = await ingest(store, _pieces(c), max_bytes=1 << 30)
    store.pin(CID.parse(ib.cid))
    before = store.stats()
    # Fresh roots are kept through the grace period.
    assert store.gc([ia.cid]).blocks_removed == 0
    res = store.gc([ia.cid], grace_seconds=0)
    assert res.blocks_removed == 5 and res.roots_dropped == 1  # c: 4 leaves + its root
    after = store.stats()
    assert after.blocks == before.blocks - 5
    assert after.bytes_stored < before.bytes_stored - len(c)
    assert after.pack_bytes == before.pack_bytes  # 2/3 live: not worth compacting yet
    assert await _read_all(store, ia.cid) == a
    assert await _read_all(store, ib.cid) == b
    with pytest.raises(BlockMissing):
        await _read_all(store, ic.cid)
    store.gc([ia.cid], grace_seconds=0, compact_below=1.0)
    assert store.stats().pack_bytes == store.stats().bytes_stored < before.pack_bytes
    assert await _read_all(store, ib.cid) == b
    store.unpin(CID.parse(ib.cid))
    store.gc([ia.cid], grace_seconds=0, compact_below=1.0)
    assert await _read_all(store, ia.cid) == a
    final = store.stats()
    assert final.blocks == 4 and final.roots == 1  # a: 3 leaves + its root
    assert final.pack_bytes == final.bytes_stored < len(a) + 1000


async def test_dedup_same_content_twice(store: PackStore) -> None:
    i1 = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    bytes1 = store.stats().pack_bytes
    i2 = await ingest(store, _pieces(DATA, 4096), max_bytes=1 << 30)
    assert i1 == i2
    assert store.stats().pack_bytes == bytes1


async def test_concurrent_uploads_do_not_mix(store: PackStore) -> None:
    rng = random.Random(3)
    datas = [rng.randbytes(2 * CHUNK_SIZE + 1000 * i) for i in range(4)]
    infos = await asyncio.gather(*(ingest(store, _pieces(d), 1 << 30) for d in datas))
    for d, info in zip(datas, infos):
        assert info.cid == str(cid_of_bytes(d))
        assert await _read_all(store, info.cid) == d
    assert os.path.isdir(store.directory / "index")


async def test_gc_concurrent_with_uploads_never_breaks_a_file(store: PackStore) -> None:
    """Uploads that dedup against blocks gc is about to drop must keep them."""
    from pienode.files.admin import verify

    rng = random.Random(21)
    shared = rng.randbytes(4 * CHUNK_SIZE)
    old = await ingest(store, _pieces(shared), 1 << 30)  # unreferenced: gc wants it gone
    datas = [shared + rng.randbytes(CHUNK_SIZE + i) for i in range(6)]
    # The new files are referenced from the start (as if their transactions committed);
    # until each commits, only the writers' claims protect the shared blocks it reuses.
    referenced = [str(cid_of_bytes(d)) for d in datas]

    async def gc_loop() -> int:
        runs = 0
        for _ in range(6):
            await asyncio.to_thread(store.gc, referenced, grace_seconds=0, compact_below=1.0)
            runs += 1
            await asyncio.sleep(0)
        return runs

    results = await asyncio.gather(gc_loop(), *(ingest(store, _pieces(d), 1 << 30) for d in datas))
    assert results[0] == 6
    infos = results[1:]
    store.gc(referenced, grace_seconds=0, compact_below=1.0)
    for d, info in zip(datas, infos):
        assert await _read_all(store, info.cid) == d  # type: ignore[union-attr]
    report = verify(store)
    assert report.ok, report.to_json()
    assert not store.has_root(CID.parse(old.cid))


async def test_reads_during_compaction_see_no_false_damage(store: PackStore) -> None:
    rng = random.Random(33)
    keep, drop = rng.randbytes(12 * CHUNK_SIZE), rng.randbytes(12 * CHUNK_SIZE)
    ik = await ingest(store, _pieces(keep), 1 << 30)
    await ingest(store, _pieces(drop), 1 << 30)

    async def reader() -> bool:
        ok = True
        for _ in range(5):
            ok &= await _read_all(store, ik.cid) == keep
        return ok

    gc_done = asyncio.to_thread(store.gc, [ik.cid], grace_seconds=0, compact_below=1.0)
    results = await asyncio.gather(gc_done, *(reader() for _ in range(4)))
    assert results[0].packs_compacted == 1
    assert all(results[1:])
    assert store.stats().damaged_detected == 0
    assert store.stats().pack_bytes == store.stats().bytes_stored


async def test_same_new_content_uploaded_concurrently_counts_once(store: PackStore) -> None:
    data = random.Random(44).randbytes(6 * CHUNK_SIZE)
    infos = await asyncio.gather(*(ingest(store, _pieces(data), 1 << 30) for _ in range(3)))
    assert len({i.cid for i in infos}) == 1
    st = store.stats()
    assert st.blocks == 7  # 6 leaves + root, however many writers raced to store them
    store.gc([infos[0].cid], grace_seconds=0, compact_below=1.0)
    st = store.stats()
    assert st.blocks == 7 and st.pack_bytes == st.bytes_stored
    assert await _read_all(store, infos[0].cid) == data


async def test_get_blocks_reads_adjacent_leaves_at_once_and_checks_each(store: PackStore) -> None:
    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    leaves = [cid_of_bytes(DATA[i : i + CHUNK_SIZE]) for i in range(0, len(DATA), CHUNK_SIZE)]
    reads: list[int] = []
    orig = store._read_run

    def spy(pack: int, off: int, n: int) -> bytes | bytearray | None:
        reads.append(n)
        return orig(pack, off, n)

    store._read_run = spy  # type: ignore[method-assign]
    missing = CID.parse(str(cid_of_bytes(b"not stored")))
    blocks, damaged = store.get_blocks([leaves[0], missing, *leaves[1:], leaves[0]])
    assert blocks[1] is None and damaged == []
    assert b"".join(b for b in blocks[:-1] if b is not None) == DATA  # type: ignore[misc]
    assert bytes(blocks[-1]) == DATA[:CHUNK_SIZE]  # type: ignore[arg-type]
    assert len(reads) == 3  # leaf 0; leaves 1..5 back to back; leaf 0 again
    assert await stat(store, info.cid) == len(DATA)


async def test_damaged_leaf_is_only_served_unchecked_to_a_client_that_checks(store: PackStore) -> None:
    from pienode.files.stream import read_all

    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    leaf = cid_of_bytes(DATA[CHUNK_SIZE : 2 * CHUNK_SIZE])
    _damage_one_byte(store, leaf)
    blocks, damaged = store.get_blocks([leaf])
    assert blocks == [None] and damaged == [0]
    with pytest.raises(BlockDamaged):  # checked: never handed out
        await read_all(store, info.cid)
    with pytest.raises(BlockDamaged):
        await _read_all(store, info.cid)
    # Unchecked (the client rebuilds the CID itself): the stored bytes, damage and all, for
    # the client to catch; the small-file path and the streaming path alike.
    for small in (True, False):
        if small:
            size, pieces = await read_all(store, info.cid, verify=False)
        else:
            size, pieces = len(DATA), read(store, info.cid, verify=False)
        got = b"".join([bytes(p) async for p in pieces])
        assert size == len(got) == len(DATA) and got != DATA
        assert cid_of_bytes(got) != CID.parse(info.cid)


async def test_read_all_small_and_large_files(store: PackStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from pienode.files import stream
    from pienode.files.stream import read_all

    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    tiny = await ingest(store, _pieces(b"x" * 10), max_bytes=1 << 30)
    empty = await ingest(store, _pieces(b""), max_bytes=1 << 30)
    for limit in (stream.SMALL_FILE, 1000):  # at once (in a thread, or inline), or streamed
        monkeypatch.setattr(stream, "SMALL_FILE", limit)
        monkeypatch.setattr(stream, "INLINE_READ", min(limit, stream.INLINE_READ))
        for cid, want in ((info.cid, DATA), (tiny.cid, b"x" * 10), (empty.cid, b"")):
            for verify in (True, False):
                size, pieces = await read_all(store, cid, verify=verify)
                assert size == len(want) and b"".join([bytes(p) async for p in pieces]) == want
    with pytest.raises(BlockMissing):
        await read_all(store, str(cid_of_bytes(b"nowhere")))


async def test_file_spans_name_where_an_unchecked_small_file_lies(store: PackStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pienode.files import stream
    from pienode.files.stream import file_spans

    info = await ingest(store, _pieces(DATA), max_bytes=1 << 30)
    root = CID.parse(info.cid)
    size, spans = file_spans(store, root)  # type: ignore[misc]
    assert size == len(DATA) and len(spans) == 1  # the leaves lie back to back: one run
    path, off, n = spans[0]
    with open(path, "rb") as f:
        f.seek(off)
        assert f.read(n) == DATA
    monkeypatch.setattr(stream, "SPANS_MAX", len(DATA) - 1)
    assert file_spans(store, root) is None  # larger files stream through read()
    monkeypatch.undo()
    assert file_spans(store, CID.parse(str(cid_of_bytes(b"elsewhere")))) is None
    leaf = cid_of_bytes(DATA[CHUNK_SIZE : 2 * CHUNK_SIZE])
    store._kv.delete(b"B" + leaf.digest)  # a leaf missing here: read_all fetches it from peers
    assert file_spans(store, root) is None
