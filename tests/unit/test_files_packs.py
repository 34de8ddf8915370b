"""The pack writer (pienode.files.packs): O_DIRECT and buffered paths, aligned and unaligned
starts, tails, several writers, abort, crash recovery, and the fallback where O_DIRECT is
refused. A LevelDB index and packs in a temp dir (on this machine's ext4, which takes
O_DIRECT; the direct-path tests check that it was really used)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pienode.directio import ALIGN, STAGE_BYTES, StagePool
from pienode.files import packs
from pienode.files.cid import CID, RAW
from pienode.files.store import PackStore
from pienode.files.unixfs import cid_of_bytes
from tests.directio_spy import spy_direct

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 256 * 1024


def _blocks(seed: int, total: int, size: int = BLOCK) -> list[tuple[CID, bytes]]:
    rnd = random.Random(seed)
    out = []
    while total > 0:
        data = rnd.randbytes(min(size, total))
        out.append((CID.of(RAW, data), data))
        total -= len(data)
    return out


def _write(store: PackStore, blocks: list[tuple[CID, bytes]]) -> packs.PackWriter:
    w = store.writer()
    for cid, data in blocks:
        w.put(cid, data)
    w.commit()
    return w


def _pack_size(store: PackStore, pack: int) -> int:
    return (store.directory / "packs" / packs.pack_name(pack)).stat().st_size


def _assert_stored(store: PackStore, blocks: list[tuple[CID, bytes]]) -> None:
    for cid, data in blocks:
        assert store.get_block(cid) == data


@pytest.fixture
def store(tmp_path: Path):
    s = PackStore(tmp_path / "files")
    yield s
    s.close()


def test_large_writer_goes_direct_and_reads_back_exactly(store: PackStore) -> None:
    blocks = _blocks(1, 3 * STAGE_BYTES + 12345)
    w = _write(store, blocks)
    assert w.wrote_direct
    _assert_stored(store, blocks)
    assert _pack_size(store, w.pack) == sum(len(d) for _, d in blocks)  # padding cut off


def test_small_writer_stays_buffered(store: PackStore) -> None:
    blocks = _blocks(2, 400)
    w = _write(store, blocks)
    assert not w.wrote_direct
    _assert_stored(store, blocks)
    assert _pack_size(store, w.pack) == 400


@pytest.mark.parametrize("head", [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 17])
@pytest.mark.parametrize("size", [STAGE_BYTES - ALIGN - 5, STAGE_BYTES, STAGE_BYTES + 1,
                                  2 * STAGE_BYTES + ALIGN - 1])
def test_any_start_and_tail_keep_committed_bytes(store: PackStore, head: int, size: int) -> None:
    first = _blocks(3, head, size=max(head, 1))
    if first:
        w1 = _write(store, first)
        _assert_stored(store, first)  # now in the page cache, which the direct write must update
    second = _blocks(4, size, size=BLOCK - 7)  # blocks straddle pages and stages
    w2 = _write(store, second)
    if first:
        assert w2.pack == w1.pack  # appended to the same pack, from its committed end
    assert w2.wrote_direct == (head % ALIGN + size >= STAGE_BYTES)
    _assert_stored(store, first + second)
    assert _pack_size(store, w2.pack) == head + size


def test_writers_on_several_packs_at_once(store: PackStore) -> None:
    a, b = _blocks(5, 2 * STAGE_BYTES + 1), _blocks(6, 2 * STAGE_BYTES + 2)
    wa, wb = store.writer(), store.writer()
    assert wa.pack != wb.pack
    for (ca, da), (cb, db) in zip(a, b):
        wa.put(ca, da)
        wb.put(cb, db)
    for cb, db in b[len(a):]:
        wb.put(cb, db)
    wb.commit()
    wa.commit()
    assert wa.wrote_direct and wb.wrote_direct
    _assert_stored(store, a + b)


def test_dedup_within_and_across_writers(store: PackStore) -> None:
    blocks = _blocks(7, STAGE_BYTES + BLOCK)
    w = store.writer()
    for cid, data in blocks + blocks:
        w.put(cid, data)
    w.commit()
    size = _pack_size(store, w.pack)
    assert size == sum(len(d) for _, d in blocks)
    w2 = _write(store, blocks)
    assert w2.bytes_written == 0
    assert store.stats().pack_bytes == size


def test_abort_cuts_back_and_the_pack_takes_the_next_writer(store: PackStore) -> None:
    kept = _blocks(8, 1000)
    w1 = _write(store, kept)
    dropped = _blocks(9, 2 * STAGE_BYTES + 3)
    w2 = store.writer()
    for cid, data in dropped:
        w2.put(cid, data)
    assert w2.wrote_direct and _pack_size(store, w2.pack) > 1000
    w2.abort()
    assert _pack_size(store, w1.pack) == 1000
    assert not any(store.has(c) for c, _ in dropped)
    again = _blocks(10, STAGE_BYTES + 5)
    w3 = _write(store, again)
    assert w3.pack == w1.pack
    _assert_stored(store, kept + again)


def test_reopen_without_commit_cuts_uncommitted_bytes(tmp_path: Path) -> None:
    store = PackStore(tmp_path / "files")
    kept = _blocks(11, 5000)
    w1 = _write(store, kept)
    w = store.writer()
    lost = _blocks(12, 2 * STAGE_BYTES)
    for cid, data in lost:
        w.put(cid, data)
    assert _pack_size(store, w.pack) > 5000
    store.close()  # no commit, no abort: as after kill -9
    store = PackStore(tmp_path / "files")
    try:
        assert _pack_size(store, w1.pack) == 5000
        _assert_stored(store, kept)
        assert not any(store.has(c) for c, _ in lost)
        more = _blocks(13, STAGE_BYTES + 1)
        _write(store, more)
        _assert_stored(store, kept + more)
    finally:
        store.close()


KILLED = r"""
import os, random, sys
sys.path.insert(0, sys.argv[1])
from pienode.directio import STAGE_BYTES
from pienode.files.store import PackStore
from pienode.files.unixfs import cid_of_bytes

store = PackStore(sys.argv[2])
w = store.writer()
data = b"committed" * 1111
w.put(cid_of_bytes(data), data)
w.commit()
w = store.writer()
rnd = random.Random(5)
n = 0
while True:
    block = rnd.randbytes(1 << 18)
    w.put(cid_of_bytes(block), block)
    n += len(block)
    if n == 3 * STAGE_BYTES:
        print(w.pack, flush=True)
"""


def test_killed_writer_leaves_only_committed_bytes(tmp_path: Path) -> None:
    d = tmp_path / "files"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(ROOT), str(d)],
                            stdout=subprocess.PIPE, text=True)
    try:
        pack = int(proc.stdout.readline())  # type: ignore[union-attr]
        path = d / "packs" / packs.pack_name(pack)
        assert path.stat().st_size >= 3 * STAGE_BYTES  # direct writes reached the file
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = PackStore(d)
    try:
        data = b"committed" * 1111
        assert store.get_block(cid_of_bytes(data)) == data
        assert path.stat().st_size == len(data)
        assert store.stats().blocks == 1
    finally:
        store.close()


def test_buffered_when_asked(tmp_path: Path) -> None:
    store = PackStore(tmp_path / "files", direct=False)
    try:
        first, second = _blocks(14, 777), _blocks(15, 2 * STAGE_BYTES + 9)
        _write(store, first)
        w = _write(store, second)
        assert not w.wrote_direct
        _assert_stored(store, first + second)
        assert _pack_size(store, w.pack) == 777 + 2 * STAGE_BYTES + 9
    finally:
        store.close()


@pytest.mark.parametrize("refused", ["open", "write"])
def test_falls_back_to_buffered_where_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """As on tmpfs (open fails) or a device with larger sectors (the write fails)."""
    spy_direct(monkeypatch, refused)
    store = PackStore(tmp_path / "files")
    try:
        first, second = _blocks(16, 3 * ALIGN + 5), _blocks(17, 2 * STAGE_BYTES + 11)
        _write(store, first)
        w = _write(store, second)
        assert not w.wrote_direct
        assert not store.direct  # later writers do not try again
        _assert_stored(store, first + second)
        assert _pack_size(store, w.pack) == 3 * ALIGN + 5 + 2 * STAGE_BYTES + 11
    finally:
        store.close()


def test_gc_compaction_of_direct_written_packs(store: PackStore) -> None:
    drop, keep = _blocks(18, 2 * STAGE_BYTES), _blocks(19, STAGE_BYTES + 100)
    w = store.writer()
    for cid, data in drop + keep:
        w.put(cid, data)
    w.commit()
    referenced = [c for c, _ in keep]
    for c in referenced:
        store.pin(c)
    result = store.gc([], grace_seconds=0)
    assert result.packs_compacted == 1
    _assert_stored(store, keep)
    assert not any(store.has(c) for c, _ in drop)


def test_staging_buffers_are_reused(store: PackStore) -> None:
    w = store.writer()
    w.put(*_blocks(20, 10)[0])
    stage = w._out.stage
    w.commit()
    w2 = store.writer()
    w2.put(*_blocks(21, 10)[0])
    assert w2._out.stage is stage
    w2.abort()


@pytest.mark.parametrize("head", [0, 1000])
def test_large_runs_not_in_the_page_cache_are_read_direct(
    store: PackStore, monkeypatch: pytest.MonkeyPatch, head: int
) -> None:
    if head:
        _write(store, _blocks(22, head))
    blocks = _blocks(23, 2 * STAGE_BYTES + 999, size=BLOCK + 3)  # leaves at unaligned offsets
    w = _write(store, blocks)
    assert w.wrote_direct  # so its bytes are not in the page cache
    opened = spy_direct(monkeypatch, reads_only=True)
    cids = [c for c, _ in blocks]
    got, damaged = store.get_blocks(cids, verify=False)  # unchecked: what was read is returned
    assert damaged == [] and [bytes(b) for b in got] == [d for _, d in blocks]  # type: ignore[arg-type]
    assert opened  # at least the runs that were not cached came from disk directly
    assert store.direct


def test_reads_fall_back_to_buffered_where_direct_is_refused(
    store: PackStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _blocks(24, 2 * STAGE_BYTES)
    _write(store, blocks)
    opened = spy_direct(monkeypatch, "open", reads_only=True)
    got, damaged = store.get_blocks([c for c, _ in blocks])
    assert damaged == [] and [bytes(b) for b in got] == [d for _, d in blocks]  # type: ignore[arg-type]
    assert len(opened) == 1 and not store.direct  # refused once, then never tried again


def test_read_run_serves_the_page_cache_and_the_disk_alike(tmp_path: Path) -> None:
    path = tmp_path / "run"
    data = random.Random(25).randbytes(3 << 20)
    path.write_bytes(data)
    pool = StagePool(1)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)  # clean pages, so that DONTNEED drops them
    try:
        for off, n in [(0, 1 << 20), (4095, (2 << 20) + 3), (7, len(data) - 7)]:
            assert packs.read_run(fd, path, off, n, pool) == data[off:off + n]
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the next from disk
            assert packs.read_run(fd, path, off, n, pool) == data[off:off + n]
        assert packs.read_run(fd, path, len(data) - 10, 20, pool) is None  # past the end
    finally:
        os.close(fd)
        pool.close()
