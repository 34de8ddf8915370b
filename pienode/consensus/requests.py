"""Client requests waiting to be ordered: pending set, de-duplication, the primary's queue.

Owns: ``RequestPool``. Every replica receives every client request (the runtime gossips
them) and keeps it pending until a committed batch contains it; pending requests drive the
request timer (Castro-Liskov §4.4). Only the primary batches them, from a FIFO queue.

Memory is bounded: at most ``max_pending_requests`` pending, and a fixed-size window of
recently delivered ids for de-duplication (the ledger refuses a committed id anyway).

Never: looks inside a payload, reads a clock (arrival times are passed in).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Iterable

from pienode.encoding import sha256


class RequestPool:
    def __init__(self, max_pending: int, recent_size: int) -> None:
        self.max_pending = max_pending
        self.recent_size = recent_size
        #: id -> (payload, arrival ms), oldest first.
        self.pending: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        self._recent: set[bytes] = set()
        self._recent_order: deque[bytes] = deque()
        #: Primary only: ids not yet proposed, FIFO, and ids in proposed batches.
        self.queue: deque[bytes] = deque()
        self.queue_bytes = 0
        self.in_flight: set[bytes] = set()
        #: Ids already forwarded to the primary in this view.
        self.forwarded: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, payload: bytes, now_ms: int, is_primary: bool) -> str | None:
        """Add a request; returns a reason string if it was not added."""
        rid = sha256(payload)
        if rid in self.pending or rid in self._recent:
            return "duplicate_request"
        if len(self.pending) >= self.max_pending:
            return "pending_full"
        self.pending[rid] = (payload, now_ms)
        if is_primary:
            self.queue.append(rid)
            self.queue_bytes += len(payload)
        return None

    def oldest(self) -> tuple[bytes, int] | None:
        """(id, arrival ms) of the request pending longest."""
        if not self.pending:
            return None
        rid, (_, arrival) = next(iter(self.pending.items()))
        return rid, arrival

    def delivered(self, requests: tuple[bytes, ...]) -> None:
        """Forget the requests of a delivered batch and remember their ids."""
        pending, recent, order = self.pending, self._recent, self._recent_order
        for payload in requests:
            rid = sha256(payload)
            pending.pop(rid, None)
            self.in_flight.discard(rid)
            self.forwarded.discard(rid)
            if rid not in recent:
                recent.add(rid)
                order.append(rid)
        while len(order) > self.recent_size:
            recent.discard(order.popleft())
        if not pending:
            self.forwarded.clear()

    def forget(self, ids: Iterable[bytes]) -> None:
        """Drop requests committed in blocks installed by state transfer."""
        for rid in ids:
            if self.pending.pop(rid, None) is not None:
                self.in_flight.discard(rid)
            if rid not in self._recent:
                self._recent.add(rid)
                self._recent_order.append(rid)
        while len(self._recent_order) > self.recent_size:
            self._recent.discard(self._recent_order.popleft())

    def take_batch(self, max_bytes: int, max_count: int) -> list[bytes]:
        """Pop up to ``max_count`` queued requests totalling at most ``max_bytes``."""
        out: list[bytes] = []
        size = 0
        queue, pending, in_flight = self.queue, self.pending, self.in_flight
        while queue and len(out) < max_count:
            rid = queue[0]
            entry = pending.get(rid)
            if entry is None or rid in in_flight:
                queue.popleft()
                if entry is not None:
                    self.queue_bytes -= len(entry[0])
                continue
            payload = entry[0]
            if out and size + len(payload) > max_bytes:
                break
            queue.popleft()
            self.queue_bytes -= len(payload)
            in_flight.add(rid)
            out.append(payload)
            size += len(payload)
        if not queue:
            self.queue_bytes = 0
        return out

    def become_primary(self, in_flight_batches: list[tuple[bytes, ...]]) -> None:
        """Rebuild the queue from pending, leaving out requests already proposed."""
        self.in_flight = {sha256(p) for reqs in in_flight_batches for p in reqs}
        self.queue = deque(rid for rid in self.pending if rid not in self.in_flight)
        self.queue_bytes = sum(len(self.pending[rid][0]) for rid in self.queue)

    def stop_primary(self) -> None:
        self.queue = deque()
        self.queue_bytes = 0
        self.in_flight = set()

    def overdue(self, older_than_ms: int, limit: int) -> list[bytes]:
        """Payloads that arrived at or before ``older_than_ms`` and were not forwarded yet."""
        out: list[bytes] = []
        for rid, (payload, arrival) in self.pending.items():
            if arrival > older_than_ms or len(out) >= limit:
                break
            if rid not in self.forwarded:
                self.forwarded.add(rid)
                out.append(payload)
        return out
