"""Checkpoints and the persisted key layout on their own (checkpoints.py, recovery.py)."""

from __future__ import annotations

from pienode.consensus import messages as m
from pienode.consensus import recovery as keys
from pienode.consensus.checkpoints import CheckpointLog, Step
from pienode.consensus.config import ReplicaConfig
from pienode.consensus.recovery import RecoveredState

CONFIG = ReplicaConfig(node_ids=("r0", "r1", "r2", "r3"), checkpoint_interval=4,
                       watermark_window=8)
A, B = bytes([0xA]) * 32, bytes([0xB]) * 32


def sign(body: bytes) -> bytes:
    return b"s" + body[-4:]


def cp(replica: str, seq: int, digest: bytes = A) -> m.Checkpoint:
    return m.make_checkpoint(seq, digest, replica, sign)


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


def test_persisted_items_read_back() -> None:
    pp = m.make_pre_prepare(1, 5, A, "r1", sign)
    prepares = tuple(m.make_prepare(1, 5, A, r, sign) for r in ("r0", "r2"))
    cert = m.PreparedCert(pp, prepares)
    vc = m.make_view_change(2, 4, B, (cp("r1", 4, B),), (cert,), "r0", sign)
    proof = tuple(cp(r, 4, B) for r in ("r0", "r1", "r2"))
    items = dict([keys.pre_prepare_item(pp, b"batch"), keys.prepared_item(cert),
                  keys.own_checkpoint_item(cp("r0", 8))] + keys.view_change_items(vc)
                 + keys.stable_items(4, B, proof, [], []))
    st = RecoveredState.from_items([(k, v) for k, v in items.items() if v is not None], 9, A)
    assert st.pre_prepares == {5: (pp, b"batch")} and st.prepared == {5: cert}
    assert st.own_checkpoints == {8: cp("r0", 8)}
    assert (st.view, st.active, st.view_change) == (2, False, vc)
    assert (st.stable_seq, st.stable_digest, st.stable_proof) == (4, B, proof)
    nv = m.make_new_view(2, (vc,), (), "r2", sign)
    after = dict(items)
    after.update(keys.new_view_items(nv))
    st = RecoveredState.from_items([(k, v) for k, v in after.items() if v is not None], 9, A)
    assert (st.view, st.active, st.view_change, st.new_view) == (2, True, None, nv)


def test_a_stable_checkpoint_deletes_what_lies_at_or_below_it() -> None:
    items = keys.stable_items(8, A, (), [7, 8], [4, 8])
    assert items[0] == (keys.KEY_STABLE, keys.stable_value(8, A, ()))
    deleted = {k for k, v in items[1:] if v is None}
    assert len(deleted) == len(items) - 1 == 6
    assert keys.seq_key(keys.PREFIX_PREPARED, 7) in deleted
    assert keys.seq_key(keys.PREFIX_OWN_CHECKPOINT, 4) in deleted
