"""CHECKPOINT messages collected per sequence number (Castro-Liskov §4.3).

Owns: ``CheckpointLog``: the checkpoints of the window (one per sender and sequence
number), the highest checkpoint each sender announced beyond the window, and our own. It
answers "does a quorum vouch for a state here?" and "are f+1 replicas beyond our window?".
Memory is bounded by (L/K + 1) * n messages.

Never: decides what to do about an answer (the replica does), sends or persists anything.
"""

from __future__ import annotations

from pienode.consensus.messages import Checkpoint


class CheckpointLog:
    def __init__(self) -> None:
        self.votes: dict[int, dict[str, Checkpoint]] = {}
        self.far: dict[str, Checkpoint] = {}
        self.own: dict[int, Checkpoint] = {}

    def record(self, cp: Checkpoint, high_watermark: int) -> bool:
        """Keep ``cp``; True if it lies within the window, False if beyond it."""
        if cp.seq > high_watermark:
            old = self.far.get(cp.replica)
            if old is None or old.seq < cp.seq:
                self.far[cp.replica] = cp
            return False
        self.votes.setdefault(cp.seq, {})[cp.replica] = cp
        return True

    def quorum(self, seq: int, size: int) -> tuple[bytes, tuple[Checkpoint, ...]] | None:
        """A state digest that ``size`` distinct replicas checkpointed at ``seq``, with them."""
        by_digest: dict[bytes, list[Checkpoint]] = {}
        for cp in self.votes.get(seq, {}).values():
            by_digest.setdefault(cp.state_digest, []).append(cp)
        for digest, cps in by_digest.items():
            if len(cps) >= size:
                return digest, tuple(sorted(cps, key=lambda c: c.replica))
        return None

    def far_target(self, high_watermark: int, size: int) -> tuple[int, bytes, tuple[str, ...]] | None:
        """The highest (seq, digest) beyond the window that ``size`` replicas announced."""
        groups: dict[tuple[int, bytes], list[str]] = {}
        for cp in self.far.values():
            if cp.seq > high_watermark:
                groups.setdefault((cp.seq, cp.state_digest), []).append(cp.replica)
        best = [(k, v) for k, v in groups.items() if len(v) >= size]
        if not best:
            return None
        (seq, digest), peers = max(best)
        return seq, digest, tuple(peers)

    def truncate(self, stable_seq: int, high_watermark: int) -> list[int]:
        """Forget everything at or below ``stable_seq``; returns our own dropped seqs."""
        for s in [s for s in self.votes if s <= stable_seq]:
            del self.votes[s]
        dropped = [s for s in self.own if s <= stable_seq]
        for s in dropped:
            del self.own[s]
        for r, cp in list(self.far.items()):
            if cp.seq <= high_watermark:
                del self.far[r]
                if cp.seq > stable_seq:
                    self.votes.setdefault(cp.seq, {})[r] = cp
        return dropped
