"""What a replica sends again to a peer that reports itself stalled (STATUS).

Owns: pure choices over the replica's log: which of our own votes, and which committed
batches with their certificates, a stalled peer should get, a slot at a time and at most
``cap`` slots per STATUS. The replica rate-limits and sends; this module only reads.

Never: mutates a slot, signs, sends, or reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pienode.consensus.certificate import CommitCertificate
from pienode.consensus.log import Slot
from pienode.consensus.messages import wire


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
