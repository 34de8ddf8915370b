"""The state read cache never answers with a value the store no longer holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pienode.ledger import keys
from pienode.ledger.state import StateOverlay
from pienode.ledger.store import Ledger
from pienode.storage.cache import CachedKV
from pienode.storage.kv import MemoryKV, WriteOps
from pienode.storage.leveldb import LevelDBStore
from tests.helpers import commit, make_consortium


class CountingKV(MemoryKV):
    """A memory store that counts reads and can run a hook in the middle of one."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.during_read = None

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        value = super().get(key)
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        return value


def batch(*pairs: tuple[bytes, bytes | None]) -> WriteOps:
    ops = WriteOps()
    for k, v in pairs:
        if v is None:
            ops.delete(k)
        else:
            ops.put(k, v)
    return ops


def test_reads_are_served_from_the_cache_and_see_every_write() -> None:
    inner = CountingKV()
    kv = CachedKV(inner, b"S")
    assert kv.get(b"Sa") is None and kv.get(b"Sa") is None
    assert inner.reads == 1, "the second read of an absent key is a hit"
    kv.write(batch((b"Sa", b"1")))
    assert kv.get(b"Sa") == b"1"
    kv.put(b"Sa", b"2")
    assert kv.get(b"Sa") == b"2"
    kv.write(batch((b"Sa", None)))
    assert kv.get(b"Sa") is None
    kv.write(batch((b"Sa", b"3")))
    kv.delete(b"Sa")
    assert kv.get(b"Sa") is None
    assert inner.reads == 1, "writes updated the entry instead of invalidating it"


def test_keys_outside_the_prefix_always_reach_the_store() -> None:
    inner = CountingKV()
    kv = CachedKV(inner, b"S")
    inner.put(b"Ba", b"x")
    assert kv.get(b"Ba") == b"x" and kv.get(b"Ba") == b"x"
    assert inner.reads == 2 and len(kv) == 0


def test_a_large_written_value_is_dropped_and_read_back_from_the_store() -> None:
    inner = CountingKV()
    kv = CachedKV(inner, b"S", max_value=8)
    assert kv.get(b"Sbig") is None
    kv.write(batch((b"Sbig", b"x" * 100)))
    assert len(kv) == 0
    assert kv.get(b"Sbig") == b"x" * 100
    assert kv.get(b"Sbig") == b"x" * 100
    assert inner.reads == 3 and len(kv) == 0, "a large value read is not kept either"


def test_a_read_that_races_a_write_does_not_leave_the_old_value_behind() -> None:
    inner = CountingKV()
    kv = CachedKV(inner, b"S")
    inner.put(b"Sk", b"old")
    # The write lands after the store answered "old" but before the read fills the cache.
    inner.during_read = lambda: kv.write(batch((b"Sk", b"new")))
    assert kv.get(b"Sk") == b"old"
    assert kv.get(b"Sk") == b"new"
    assert kv.get(b"Sk") == b"new"


def test_a_full_cache_starts_over_and_stays_correct() -> None:
    inner = CountingKV()
    kv = CachedKV(inner, b"S", max_entries=3)
    for i in range(10):
        assert kv.get(b"S%d" % i) is None
    assert len(kv) <= 3
    kv.write(batch(*((b"S%d" % i, b"v%d" % i) for i in range(10))))
    assert [kv.get(b"S%d" % i) for i in range(10)] == [b"v%d" % i for i in range(10)]


def test_a_failed_batch_leaves_the_cache_agreeing_with_the_store(tmp_path: Path) -> None:
    kv = CachedKV(LevelDBStore(tmp_path / "db"), b"S")
    kv.write(batch((b"Sa", b"1")))
    assert kv.get(b"Sa") == b"1" and kv.get(b"Sb") is None

    def broken():
        yield b"Sa", b"2"
        yield b"Sb", b"2"
        raise RuntimeError("the batch broke partway")

    ops = WriteOps()
    ops.ops = broken()  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        kv.write(ops)
    assert kv.get(b"Sa") == b"1" and kv.get(b"Sb") is None
    kv.close()


def test_a_restart_reads_what_was_committed(tmp_path: Path) -> None:
    kv = CachedKV(LevelDBStore(tmp_path / "db"), b"S")
    assert kv.get(b"Sa") is None
    kv.write(batch((b"Sa", b"1")))
    kv.close()
    again = CachedKV(LevelDBStore(tmp_path / "db"), b"S")
    assert again.get(b"Sa") == b"1"
    again.close()


def test_admission_sees_a_user_the_next_block_registers() -> None:
    c = make_consortium(4)
    kv = CachedKV(MemoryKV(), keys.STATE)
    ledger = Ledger(kv, c.genesis)
    view = StateOverlay(kv)
    assert view.get(keys.user_key("pat-00000000000000a1")) is None  # cached as absent
    b = commit(ledger, [c.register_tx("pat-00000000000000a1", "patient")])
    assert b.receipts[0].ok
    assert StateOverlay(kv).get(keys.user_key("pat-00000000000000a1"))["role"] == "patient"
    assert kv.hits >= 1
