"""CHECKPOINT messages collected per sequence number (Castro-Liskov §4.3).

Owns: ``CheckpointLog``: the checkpoints of the window (one per sender and sequence
number), the highest checkpoint each sender announced beyond the window, and our own. It
answers "does a quorum vouch for a state here?" and "are f+1 replicas beyond our window?",
and ``add`` turns a new CHECKPOINT into one ``Step``: drop it, take a stable checkpoint,
or fetch state. Memory is bounded by (L/K + 1) * n messages. Also ``StateFetch``: the state
transfer under way.

Never: carries a step out (the replica does), sends or persists anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from pienode.consensus.config import ReplicaConfig
from pienode.consensus.messages import Checkpoint


@dataclass(frozen=True, slots=True)
class Step:
    """What a CHECKPOINT leads to; at most one field is set (none: keep waiting)."""

    drop: str | None = None  # a ``stats`` key: the checkpoint changes nothing
    stable: tuple[int, bytes, tuple[Checkpoint, ...]] | None = None  # (seq, digest, proof)
    fetch: tuple[int, bytes, tuple[str, ...]] | None = None  # (seq, digest, peers) beyond us


class StateFetch:
    """The state transfer we asked the runtime for (§4.3): its target and when we asked.

    Until the runtime answers, the replica delivers nothing. Asking again for no higher a
    target waits ``retry_ms``, so a stream of far checkpoints does not flood the runtime.
    """

    def __init__(self, retry_ms: int) -> None:
        self._retry_ms = retry_ms
        #: (target seq, asked at ms), or None when no transfer is under way.
        self.pending: tuple[int, int] | None = None

    def ask(self, target: int, now_ms: int) -> bool:
        """Record an ask for ``target``; False if one under way already covers it."""
        if self.pending is not None:
            old_target, since = self.pending
            if old_target >= target and now_ms - since < self._retry_ms:
                return False
        self.pending = (target, now_ms)
        return True

    def overdue(self, now_ms: int) -> int | None:
        """The target of a transfer unanswered for ``retry_ms`` (now given up), or None."""
        if self.pending is None or now_ms - self.pending[1] < self._retry_ms:
            return None
        target = self.pending[0]
        self.pending = None
        return target


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

    def diverges(self, seq: int, digest: bytes) -> bool:
        """Our own checkpoint at ``seq`` names another state than ``digest``."""
        own = self.own.get(seq)
        return own is not None and own.state_digest != digest

    def add(self, cp: Checkpoint, *, stable_seq: int, high_watermark: int, last_executed: int,
            config: ReplicaConfig) -> Step:
        """Keep a (signature-checked) CHECKPOINT and say what follows from it."""
        if cp.seq <= stable_seq or cp.seq % config.checkpoint_interval:
            return Step(drop="old_checkpoint")
        if not self.record(cp, high_watermark):
            # f+1 replicas checkpointed beyond our window: at least one correct replica is
            # there, so we are behind and fetch state (§4.3, "state transfer").
            far = self.far_target(high_watermark, config.weak_quorum)
            return Step(fetch=far) if far is not None else Step()
        found = self.quorum(cp.seq, config.quorum)
        if found is None:
            return Step()
        digest, proof = found
        if self.diverges(cp.seq, digest):
            # Our execution disagrees with a quorum: our state is wrong. Count it loudly;
            # the certified chain (state transfer) is the way back.
            return Step(drop="state_divergence")
        if cp.seq not in self.own and cp.seq > last_executed:
            return Step()  # wait until we executed it ourselves
        return Step(stable=(cp.seq, digest, proof))

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
