"""What a CHECKPOINT leads to, on its own (pienode/consensus/checkpoints.py)."""

from __future__ import annotations

from pienode.consensus import messages as m
from pienode.consensus.checkpoints import CheckpointLog, StateFetch, Step
from pienode.consensus.config import ReplicaConfig
from tests.consensus_helpers import A, B, cp

CONFIG = ReplicaConfig(node_ids=("r0", "r1", "r2", "r3"), checkpoint_interval=4,
                       watermark_window=8)


def add(log: CheckpointLog, c: m.Checkpoint, stable: int = 0, executed: int = 100) -> Step:
    return log.add(c, stable_seq=stable, high_watermark=stable + 8, last_executed=executed,
                   config=CONFIG)


def test_old_or_off_interval_checkpoints_are_dropped() -> None:
    log = CheckpointLog()
    assert add(log, cp("r1", 4), stable=4) == Step(drop="old_checkpoint")
    assert add(log, cp("r1", 6)) == Step(drop="old_checkpoint")
    assert log.votes == {}


def test_a_quorum_makes_a_checkpoint_stable_with_its_proof() -> None:
    log = CheckpointLog()
    assert add(log, cp("r2", 4)) == Step()
    assert add(log, cp("r3", 4, B)) == Step()  # another state does not count
    assert add(log, cp("r1", 4)) == Step()
    step = add(log, cp("r0", 4))
    assert step.stable is not None and step.stable[:2] == (4, A)
    assert [c.replica for c in step.stable[2]] == ["r0", "r1", "r2"]


def test_a_quorum_against_our_own_state_is_divergence_and_unexecuted_waits() -> None:
    log = CheckpointLog()
    log.own[4] = cp("r0", 4, B)
    for r in ("r1", "r2"):
        add(log, cp(r, 4))
    assert log.diverges(4, A) and not log.diverges(4, B) and not log.diverges(8, A)
    assert add(log, cp("r3", 4)) == Step(drop="state_divergence")
    other = CheckpointLog()
    for r in ("r1", "r2"):
        add(other, cp(r, 4), executed=3)
    assert add(other, cp("r3", 4), executed=3) == Step()  # wait until we executed seq 4


def test_f_plus_one_beyond_the_window_means_fetch() -> None:
    log = CheckpointLog()
    assert add(log, cp("r1", 12)) == Step()
    assert add(log, cp("r2", 16)) == Step()
    assert add(log, cp("r3", 12)) == Step(fetch=(12, A, ("r1", "r3")))


def test_state_fetch_holds_back_a_repeat_ask_until_retry() -> None:
    f = StateFetch(retry_ms=1000)
    assert f.ask(10, 0) and f.pending == (10, 0)
    assert not f.ask(8, 500)  # covered by the transfer under way
    assert f.ask(12, 500)  # a higher target goes at once
    assert not f.ask(12, 1499) and f.ask(12, 1500)
    assert f.overdue(2499) is None
    assert f.overdue(2500) == 12 and f.pending is None
    assert f.overdue(9999) is None
