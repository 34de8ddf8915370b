"""The request timer's verdict on the primary (§4.4): silent, slow or censoring.

Owns: the bookkeeping behind that verdict (requests delivered and when, when the current
view or grace period began, the pending request being watched) and ``check``, the pure
decision from the oldest pending request. The replica forwards overdue requests, starts the
view change and arms its timer from the answer.

At T the oldest request is overdue: it is forwarded to the primary (it may have reached
only some nodes). From 2T on, the primary is replaced if nothing was delivered for T
(silent or slow primary), or if, since the oldest request became overdue, the primary
delivered more than twice as many requests as were pending here at that moment (plus 16)
without it: its queue is FIFO and gossip takes far less than T, so what was ahead of our
oldest request was pending here too (censoring). Plain overload, where batches keep flowing
in order, is neither.

Never: reads a clock (``now`` comes in), sends, or touches the request pool.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    overdue: bool  # the oldest request waited at least T: forward it to the primary
    reason: str | None  # "primary_stalled" / "primary_censoring": change view now
    recheck_ms: int  # otherwise: look again after this long


class PrimaryWatch:
    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self.delivered_requests = 0
        self.last_delivery_ms = 0
        #: Start of the current view, or of a fresh grace period for pending requests.
        self.view_started_ms = 0
        self._watched: bytes | None = None
        self._mark = 0
        self._ahead = 0

    def delivered(self, requests: int, now_ms: int) -> None:
        self.delivered_requests += requests
        self.last_delivery_ms = now_ms

    def check(self, request_id: bytes, arrival_ms: int, pending: int, now_ms: int) -> Verdict:
        """The verdict on the oldest pending request ``request_id``, ``pending`` in all."""
        t = self.timeout_ms
        base = max(arrival_ms, self.view_started_ms)
        age = now_ms - base
        if age < t:
            return Verdict(False, None, base + t - now_ms)
        if self._watched != request_id:
            self._watched, self._mark, self._ahead = request_id, self.delivered_requests, pending
        if age < 2 * t:
            return Verdict(True, None, base + 2 * t - now_ms)
        if now_ms - max(self.last_delivery_ms, self.view_started_ms) >= t:
            return Verdict(True, "primary_stalled", 0)
        if self.delivered_requests - self._mark > 2 * self._ahead + 16:
            return Verdict(True, "primary_censoring", 0)
        return Verdict(True, None, max(1, t // 2))
