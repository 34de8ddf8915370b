"""The VIEW-CHANGE messages a replica holds while views change (Castro-Liskov §4.4, §4.5.2).

Owns: ``ViewChangeLog``: per replica the VIEW-CHANGE for the highest view it asked for
(ours included), our own while we move to a view, the NEW-VIEW that started the current
view, the count of view changes that timed out since then, and a bounded cache of
VIEW-CHANGEs already verified. It answers "is this VIEW-CHANGE news?", "have f+1 others
moved on?", "does a quorum want this view?" and "how long do we wait for it?".

Never: sends, persists, changes the replica's view, or raises on a peer's bad message.
"""

from __future__ import annotations

from pienode.consensus.config import ReplicaConfig
from pienode.consensus.messages import NewView, ViewChange
from pienode.consensus.viewchange import SigCheck, view_change_ok
from pienode.encoding import sha256

#: Upper bound on the view-change timeout multiplier (2**6 = 64x the base).
MAX_BACKOFF_EXP = 6


class ViewChangeLog:
    def __init__(self, config: ReplicaConfig, sig_ok: SigCheck) -> None:
        self._config = config
        self._sig_ok = sig_ok
        self.by_replica: dict[str, ViewChange] = {}
        #: Ours while we move to a view; None once a NEW-VIEW installed one.
        self.own: ViewChange | None = None
        #: The NEW-VIEW that started the current view (sent again to replicas behind it).
        self.new_view: NewView | None = None
        #: View changes that timed out since the last NEW-VIEW: each doubles the timeout.
        self.failures = 0
        self._verified: set[bytes] = set()

    def verified(self, vc: ViewChange) -> bool:
        """``view_change_ok``, remembered by body hash: one VIEW-CHANGE comes again in
        retransmissions and inside NEW-VIEWs, and its check verifies many signatures."""
        key = sha256(vc.body)
        if key in self._verified:
            return True
        if view_change_ok(vc, self._config, self._sig_ok):
            if len(self._verified) > 4 * self._config.n:
                self._verified.clear()
            self._verified.add(key)
            return True
        return False

    def screen(self, vc: ViewChange, view: int, active: bool) -> str | None:
        """Why a peer's ``vc`` is dropped (a ``stats`` key), or None to record it."""
        if vc.view < view or (vc.view == view and active):
            return "old_view_change"
        old = self.by_replica.get(vc.replica)
        if old is not None and old.view >= vc.view:
            return "duplicate"
        if not self.verified(vc):
            return "bad_view_change"
        return None

    def started(self, vc: ViewChange) -> None:
        """We sent ``vc``: the current view's NEW-VIEW no longer holds."""
        self.own = vc
        self.new_view = None
        self.by_replica[vc.replica] = vc
        self._verified.add(sha256(vc.body))

    def join_target(self, view: int, node_id: str) -> int | None:
        """Once f+1 others ask for views above ``view``, one of them is correct: the
        highest view that f+1 of them reached (§4.5.2 liveness). Else None."""
        above = sorted((vc.view for r, vc in self.by_replica.items()
                        if r != node_id and vc.view > view), reverse=True)
        k = self._config.weak_quorum
        return above[k - 1] if len(above) >= k else None

    def wanting(self, view: int) -> int:
        """Replicas that want ``view`` or a later one (who gave up on it counts too)."""
        return sum(1 for vc in self.by_replica.values() if vc.view >= view)

    def for_view(self, view: int) -> list[ViewChange]:
        return [vc for vc in self.by_replica.values() if vc.view == view]

    def timeout_ms(self) -> int:
        return self._config.view_change_timeout_ms << min(self.failures, MAX_BACKOFF_EXP)

    def entered(self, nv: NewView) -> None:
        """``nv`` installed its view: keep only VIEW-CHANGEs for later views."""
        self.failures = 0
        self.own = None
        self.new_view = nv
        self.by_replica = {r: vc for r, vc in self.by_replica.items() if vc.view > nv.view}
        self._verified.clear()
