"""The LevelDB store never frees the database under a call still running in a thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pienode.errors import StorageError
from pienode.storage.kv import WriteOps
from pienode.storage.leveldb import LevelDBStore


def ops_then_failure() -> WriteOps:
    """A batch whose filling breaks after its first op (key ``a``)."""
    def ops():
        yield b"a", b"1"
        raise RuntimeError("the batch broke after its first op")

    batch = WriteOps()
    batch.ops = ops()  # type: ignore[assignment]
    return batch


def test_close_waits_for_a_write_under_way(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    inside, release = threading.Event(), threading.Event()

    def slow_ops():  # the batch is still being filled when close is asked for
        inside.set()
        release.wait(10)
        yield b"k", b"v"

    ops = WriteOps()
    ops.ops = slow_ops()  # type: ignore[assignment]
    writer = threading.Thread(target=store.write, args=(ops,))
    writer.start()
    assert inside.wait(10)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close must wait for the write under way"
    release.set()
    writer.join(10)
    closer.join(10)
    assert not closer.is_alive()
    reopened = LevelDBStore(tmp_path / "db")
    assert reopened.get(b"k") == b"v"  # the write that close waited for is durable
    reopened.close()


def test_calls_after_close_raise_a_storage_error(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    store.put(b"a", b"1")
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.get(b"a")
    with pytest.raises(StorageError, match="closed"):
        store.put(b"a", b"2")


def test_a_failed_call_is_counted_out_so_close_does_not_hang(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")

    with pytest.raises(RuntimeError):
        store.write(ops_then_failure())
    with pytest.raises(TypeError):
        store.get("not bytes")  # type: ignore[arg-type]
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "a failed call must not leave close waiting"


def test_a_database_written_without_bloom_filters_still_reads(tmp_path: Path) -> None:
    import plyvel

    old = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    for i in range(2000):
        old.put(b"k%05d" % i, b"v%d" % i)
    old.compact_range()  # into tables that carry no filter
    old.close()
    store = LevelDBStore(tmp_path / "db")
    assert store.get(b"k00007") == b"v7" and store.get(b"k01999") == b"v1999"
    assert store.get(b"k02000") is None and store.get(b"missing") is None
    store.put(b"k02000", b"new")
    store.close()
    again = LevelDBStore(tmp_path / "db")
    assert again.get(b"k02000") == b"new" and again.get(b"k00000") == b"v0"
    again.close()


def test_a_batch_that_fails_partway_writes_nothing(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")

    with pytest.raises(RuntimeError):
        store.write(ops_then_failure())
    assert store.get(b"a") is None  # one batch: all of it or none of it
    store.close()


def test_a_store_written_with_snappy_tables_still_reads(tmp_path: Path) -> None:
    """Stores are opened without compression now; tables an older node wrote compressed
    (plyvel's snappy default) must still read back, after a compaction rewrote them too."""
    import plyvel

    old = plyvel.DB(str(tmp_path / "db"), create_if_missing=True, compression="snappy")
    for i in range(5000):
        old.put(b"S%06d" % i, b"value-%06d" % i * 8)
    old.compact_range()
    old.close()
    store = LevelDBStore(tmp_path / "db")
    assert store.get(b"S000123") == b"value-000123" * 8
    ops = WriteOps()
    for i in range(0, 5000, 2):
        ops.put(b"S%06d" % i, b"new")
    store.write(ops)
    store._db.compact_range()
    assert [v for _, v in store.iterate(b"S")][:3] == [b"new", b"value-000001" * 8, b"new"]
    assert sum(1 for _ in store.iterate(b"S")) == 5000
    store.close()
