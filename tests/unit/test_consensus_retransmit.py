"""Who is stalled, what a stalled peer gets again and how much (consensus/retransmit.py)."""

from __future__ import annotations

from pienode.consensus import messages as m
from pienode.consensus.decoding import decode_message
from pienode.consensus.actions import Send
from pienode.consensus.certificate import CommitCertificate
from pienode.consensus.log import Slot
from pienode.consensus.retransmit import RETRANSMIT_CAP, Budget, Progress, catch_up
from pienode.encoding import sha256
from tests.consensus_helpers import sign


def status(last_delivered: int, stable_seq: int = 0, view: int = 0, active: bool = True) -> m.Status:
    return m.make_status(view, active, last_delivered, stable_seq, "r2", sign)


def committed_slot(seq: int, view: int = 0) -> Slot:
    batch = m.Batch(seq, (b"req%d" % seq,))
    data = batch.encode()
    slot = Slot(seq)
    slot.pre_prepare = m.make_pre_prepare(view, seq, sha256(data), "r0", sign)
    slot.batches[sha256(data)] = (batch, data)
    slot.prepares["r1"] = m.make_prepare(view, seq, sha256(data), "r1", sign)
    slot.commits["r1"] = m.make_commit(view, seq, sha256(data), "r1", sign)
    slot.certificate = CommitCertificate(view, seq, sha256(data), (("r1", b"x"),))
    return slot


def kinds(sends: list[Send]) -> list[str]:
    assert all(s.to == "r2" for s in sends)
    return [type(decode_message(s.data)[0]).__name__ for s in sends]


def test_budget_allows_twice_the_cap_per_interval_and_resets() -> None:
    b = Budget(cap=2, interval_ms=100)
    assert all(b.allow("p", 0) for _ in range(4))
    assert not b.allow("p", 50) and b.allow("q", 50)
    assert b.allow("p", 50, 0) is True and not b.allow("p", 50, 1)
    assert b.allow("p", 100)  # a new window


def call(peer: m.Status, slots: dict[int, Slot], allowed: int = 1000, **kw: object) -> list[Send]:
    left = [allowed]

    def allow() -> bool:
        left[0] -= 1
        return left[0] >= 0
    args: dict[str, object] = dict(slots=slots, own_checkpoints={}, stable_seq=0,
                                   stable_digest=m.GENESIS_DIGEST, stable_proof=(),
                                   last_delivered=max(slots, default=0), view=0, active=True,
                                   node_id="r1", signer=sign, allow=allow)
    args.update(kw)
    return catch_up(peer, **args)  # type: ignore[arg-type]


def test_a_stalled_peer_gets_committed_batches_then_our_votes() -> None:
    slots = {s: committed_slot(s) for s in (1, 2, 3)}
    out = call(status(1), slots)
    assert kinds(out) == ["Committed", "Committed", "Prepare", "Commit", "Prepare", "Commit"]
    assert [decode_message(s.data)[0].seq for s in out[:2]] == [2, 3]  # type: ignore[union-attr]
    # In another view (or inactive) our votes are of no use to it.
    assert kinds(call(status(1, view=1), slots)) == ["Committed", "Committed"]


def test_at_most_cap_batches_and_nothing_once_the_budget_refuses() -> None:
    slots = {s: committed_slot(s) for s in range(1, RETRANSMIT_CAP + 5)}
    out = call(status(0), slots, active=False)
    assert len(out) == RETRANSMIT_CAP
    assert len(call(status(0), slots, allowed=3, active=False)) == 3


def test_checkpoints_and_the_stable_proof_for_a_peer_behind_our_checkpoint() -> None:
    cps = {s: m.make_checkpoint(s, bytes([s]) * 32, "r1", sign) for s in (4, 8)}
    proof = tuple(m.make_checkpoint(4, bytes([4]) * 32, r, sign) for r in ("r0", "r1", "r3"))
    out = call(status(0, stable_seq=0), {}, own_checkpoints=cps, stable_seq=4,
               stable_digest=bytes([4]) * 32, stable_proof=proof, last_delivered=4)
    assert kinds(out) == ["Checkpoint", "Checkpoint", "CheckpointProof"]
    # The proof goes even when the budget is spent.
    assert kinds(call(status(0), {}, allowed=0, own_checkpoints=cps, stable_seq=4,
                      stable_digest=bytes([4]) * 32, stable_proof=proof,
                      last_delivered=4)) == ["CheckpointProof"]
    assert kinds(call(status(4, stable_seq=4), {}, own_checkpoints=cps)) == ["Checkpoint"]


def test_we_are_stalled_when_nothing_was_delivered_between_two_ticks() -> None:
    p = Progress()
    assert not p.stalled
    assert p.tick(0) is False  # the first tick has nothing to compare with
    assert p.tick(0) is True and p.stalled
    assert p.tick(3) is False and not p.stalled
    assert p.tick(3) is True
    assert p.tick(4) is False


def test_a_peer_is_stalled_when_two_of_its_status_report_the_same_height() -> None:
    p = Progress()
    assert p.peer_stalled("r1", 5) is False  # first STATUS: nothing to compare with
    assert p.peer_stalled("r2", 5) is False  # peers are tracked apart
    assert p.peer_stalled("r1", 5) is True
    assert p.peer_stalled("r1", 6) is False
    assert p.peer_stalled("r2", 5) is True
    assert p.peer_stalled("r1", 6) is True
    assert not p.stalled  # a peer's progress says nothing about ours
