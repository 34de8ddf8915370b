"""What a replica sends again to a peer that reports itself stalled (STATUS).

Owns: pure choices over the replica's log: which of our own checkpoints and votes, and
which committed batches with their certificates, a stalled peer should get, a slot at a
time and at most ``RETRANSMIT_CAP`` slots per STATUS (``catch_up``); ``Budget``, the
per-peer limit on what a peer can make us send again; and ``Progress``, who has stopped
delivering: we ourselves between two status ticks, a peer between two of its STATUS.

Never: mutates a slot, sends, or reads a clock (``now_ms`` comes in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from pienode.consensus.actions import Send
from pienode.consensus.certificate import CommitCertificate, certificate_fields
from pienode.consensus.log import Slot
from pienode.consensus.messages import (
    Checkpoint, Signer, Status, make_checkpoint_proof, make_committed, wire,
)

#: Sequence numbers retransmitted to one stalled peer per STATUS it sends.
RETRANSMIT_CAP = 16


class Budget:
    """Retransmission budget: ``2 * cap`` messages per peer per ``interval_ms``, so a
    faulty peer cannot turn small requests into a flood of batches."""

    def __init__(self, cap: int, interval_ms: int) -> None:
        self._limit = 2 * cap
        self._interval_ms = interval_ms
        #: peer -> (window start ms, messages served in that window)
        self._served: dict[str, tuple[int, int]] = {}

    def allow(self, peer: str, now_ms: int, count: int = 1) -> bool:
        """May ``count`` more messages go to ``peer`` now? (Counts them if so.)"""
        start, used = self._served.get(peer, (now_ms, 0))
        if now_ms - start >= self._interval_ms:
            start, used = now_ms, 0
        if used + count > self._limit:
            return False
        self._served[peer] = (start, used + count)
        return True


class Progress:
    """Who is stalled: a replica whose last delivered sequence number did not move since
    the previous look (our own at each status tick, a peer's at each STATUS it sends)."""

    def __init__(self) -> None:
        #: We delivered nothing between the last two status ticks.
        self.stalled = False
        self._delivered_at_tick = -1
        #: peer -> the last delivered sequence number its previous STATUS reported
        self._peers: dict[str, int] = {}

    def tick(self, last_delivered: int) -> bool:
        """A status tick: are we stalled (nothing delivered since the previous tick)?"""
        self.stalled = last_delivered == self._delivered_at_tick
        self._delivered_at_tick = last_delivered
        return self.stalled

    def peer_stalled(self, peer: str, last_delivered: int) -> bool:
        """``peer`` reports ``last_delivered``: the same as in its previous STATUS?"""
        prev = self._peers.get(peer)
        self._peers[peer] = last_delivered
        return prev is not None and prev == last_delivered


def catch_up(peer: Status, *, slots: Mapping[int, Slot], own_checkpoints: Mapping[int, Checkpoint],
             stable_seq: int, stable_digest: bytes, stable_proof: tuple[Checkpoint, ...],
             last_delivered: int, view: int, active: bool, node_id: str, signer: Signer,
             allow: Callable[[], bool]) -> list[Send]:
    """What the stalled ``peer`` (its STATUS) gets again, in this order:

    our own CHECKPOINTs above its stable one (if every replica lost some, nobody has a proof
    to send, and only these let a checkpoint become stable); the proof of our stable
    checkpoint if it is behind it; committed batches with their certificates up to
    ``RETRANSMIT_CAP`` beyond what it delivered; and, if we are both active in ``view``, our
    own votes for the sequence numbers it has not delivered. ``allow()`` is asked before each
    message but the proof, and once it refuses a batch or a vote, nothing further goes.
    """
    to = peer.replica
    out: list[Send] = []
    for seq in sorted(own_checkpoints):
        if seq > peer.stable_seq and allow():
            out.append(Send(to, wire(own_checkpoints[seq])))
    if peer.stable_seq < stable_seq and stable_proof:
        proof = make_checkpoint_proof(stable_seq, stable_digest, stable_proof, node_id, signer)
        out.append(Send(to, wire(proof)))
    lo = max(peer.last_delivered, stable_seq) + 1
    if peer.last_delivered < last_delivered:
        hi = min(last_delivered, lo + RETRANSMIT_CAP - 1)
        for seq, batch_bytes, cert in committed_batches(slots, lo, hi):
            if not allow():
                return out
            msg = make_committed(seq, batch_bytes, certificate_fields(cert), cert, node_id, signer)
            out.append(Send(to, wire(msg)))
    if active and peer.active and peer.view == view:
        for votes in own_votes(slots, node_id, view, lo, RETRANSMIT_CAP):
            if not allow():
                return out
            out.extend(Send(to, v) for v in votes)
    return out


def own_votes(slots: Mapping[int, Slot], node_id: str, view: int, lo: int,
              cap: int) -> Iterator[list[bytes]]:
    """Per slot in ``[lo, lo + cap)`` that we hold, the wire form of our own votes in
    ``view``: our pre-prepare (with its batch) if we were the primary, our prepare, our
    commit. A slot with none of them still yields (an empty list), so the caller's rate
    limit counts every slot it walks."""
    for seq in range(lo, lo + cap):
        slot = slots.get(seq)
        if slot is None:
            continue
        out: list[bytes] = []
        pp = slot.pre_prepare
        if pp is not None and pp.view == view:
            if pp.replica == node_id:
                entry = slot.batches.get(pp.digest)
                out.append(wire(pp, entry[1] if entry else None))
            mine = slot.prepares.get(node_id)
            if mine is not None and mine.view == view:
                out.append(wire(mine))
        commit = slot.commits.get(node_id)
        if commit is not None and commit.view == view:
            out.append(wire(commit))
        yield out


def committed_batches(slots: Mapping[int, Slot], lo: int,
                      hi: int) -> Iterator[tuple[int, bytes, CommitCertificate]]:
    """(seq, batch encoding, commit certificate) for each slot in ``[lo, hi]`` that we
    hold committed together with its batch."""
    for seq in range(lo, hi + 1):
        slot = slots.get(seq)
        if slot is None or slot.certificate is None:
            continue
        entry = slot.batches.get(slot.certificate.digest)
        if entry is not None:
            yield seq, entry[1], slot.certificate
