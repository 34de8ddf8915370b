"""The primary's batching decisions on their own (pienode/consensus/proposer.py)."""

from __future__ import annotations

from pienode.consensus.config import ReplicaConfig
from pienode.consensus.proposer import Proposer

CONFIG = ReplicaConfig(node_ids=("r0", "r1", "r2", "r3"), max_batch_count=3, max_batch_bytes=100,
                       max_inflight_batches=2, batch_timeout_ms=5, batch_max_wait_ms=50)


def test_a_full_queue_is_cut_at_once_a_partial_one_only_when_due() -> None:
    p = Proposer(CONFIG)
    assert p.may_cut(3, 30, 0, 100)  # count fills a batch
    assert p.may_cut(1, 100, 0, 100)  # bytes fill a batch
    assert not p.may_cut(2, 30, 0, 100)
    p.batch_due = True
    assert p.may_cut(1, 10, 0, 100)


def test_no_cut_beyond_the_pipeline_depth_or_the_high_watermark() -> None:
    p = Proposer(CONFIG)
    p.next_seq = 3  # batches 1 and 2 undelivered
    assert not p.may_cut(3, 30, 0, 100)
    assert p.may_cut(3, 30, 1, 100)
    assert not p.may_cut(3, 30, 2, 2)


def test_the_batch_timer_waits_for_idle_or_the_maximum_wait() -> None:
    p = Proposer(CONFIG)
    p.queue_since_ms, p.last_arrival_ms = 1000, 1003
    assert p.timer_wait(1004) == 4  # idle at 1008
    assert p.timer_wait(1008) == 0
    p.last_arrival_ms = 1049
    assert p.timer_wait(1049) == 1  # the maximum wait ends at 1050
    assert p.timer_wait(2000) == 0


def test_batches_get_consecutive_seqs_and_growing_timestamps() -> None:
    p = Proposer(CONFIG)
    seq, b = p.batch([b"a"], 500, 0)
    assert (seq, b.timestamp_ms, b.requests) == (1, 500, (b"a",))
    seq, b = p.batch([b"b"], 400, 0)  # our clock went back: still later than the last
    assert (seq, b.timestamp_ms) == (2, 501)
    seq, b = p.batch([b"c"], 400, 900)  # and later than anything delivered
    assert (seq, b.timestamp_ms) == (3, 901)
