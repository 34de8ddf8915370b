"""The persisted key layout, where a restarted replica resumes, and the amnesic vote floor
(pienode/consensus/recovery.py)."""

from __future__ import annotations

from pienode.consensus import messages as m
from pienode.consensus import recovery as keys
from pienode.consensus.recovery import RecoveredState, VoteFloor
from tests.consensus_helpers import A, B, cp, sign


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


def test_where_a_restarted_replica_resumes_its_view() -> None:
    assert RecoveredState(3, A, view=2).resume_view() == (2, True, None, None)
    vc = m.make_view_change(2, 0, m.GENESIS_DIGEST, (), (), "r0", sign)
    # Moving to view 2 with our VIEW-CHANGE persisted: hold it (and resend it).
    moving = RecoveredState(3, A, view=2, active=False, view_change=vc)
    assert moving.resume_view() == (2, False, vc, None)
    # Crashed after persisting the view, before the VIEW-CHANGE: back in view 1, active,
    # and the change to view 2 starts again.
    assert RecoveredState(3, A, view=2, active=False).resume_view() == (1, True, None, 2)
    old = m.make_view_change(1, 0, m.GENESIS_DIGEST, (), (), "r0", sign)
    stale = RecoveredState(3, A, view=2, active=False, view_change=old)
    assert stale.resume_view() == (1, True, None, 2)
    # An active view ignores a leftover VIEW-CHANGE.
    assert RecoveredState(3, A, view=2, view_change=vc).resume_view() == (2, True, None, None)


def test_an_intact_replica_votes_in_every_view() -> None:
    f = VoteFloor(amnesic=False)
    assert f.allows(0) and not f.learn("r1", 9, 0, quorum=3, weak_quorum=2)
    assert f.floor == -1


def test_an_amnesic_replica_waits_for_quorum_minus_one_peers_then_skips_their_views() -> None:
    f = VoteFloor(amnesic=True)
    assert not f.allows(0) and not f.allows(100)
    assert not f.learn("r1", 7, 0, quorum=3, weak_quorum=2)
    assert f.floor is None
    assert f.learn("r2", 3, 0, quorum=3, weak_quorum=2)  # f+1 = 2 of them reached view 3
    assert f.floor == 3 and not f.allows(3) and f.allows(4)
    assert not f.learn("r3", 50, 0, quorum=3, weak_quorum=2)  # fixed once
    g = VoteFloor(amnesic=True)
    g.learn("r1", 1, 5, quorum=2, weak_quorum=2)
    assert g.floor == 5  # never below our own view
