"""The primary's batching (Castro-Liskov §4.2; batching as in §5.1): when the queue of
pending requests is cut into a batch, and the sequence number and timestamp it gets.

Owns: ``Proposer``: the next sequence number to pre-prepare, the last timestamp given, and
the batch timer's bookkeeping (when a request last arrived, since when requests wait,
whether a cut is due). A batch is cut when it is full, or when the queue went idle for
``batch_timeout_ms``, or when its oldest request waited ``batch_max_wait_ms``; never beyond
``max_inflight_batches`` undelivered batches or the high watermark.

Never: takes requests from the pool, signs, sends, persists, or reads a clock.
"""

from __future__ import annotations

from pienode.consensus.config import ReplicaConfig
from pienode.consensus.messages import Batch


class Proposer:
    def __init__(self, config: ReplicaConfig) -> None:
        self._config = config
        self.next_seq = 1
        self.last_ts = 0
        #: The batch timer fired: cut what is queued even if it does not fill a batch.
        self.batch_due = False
        self.queue_since_ms = 0
        self.last_arrival_ms = 0

    def may_cut(self, queued: int, queued_bytes: int, last_delivered: int,
                high_watermark: int) -> bool:
        """May the primary cut a batch from ``queued`` requests now?"""
        cfg = self._config
        if self.next_seq - 1 - last_delivered >= cfg.max_inflight_batches:
            return False
        if self.next_seq > high_watermark:
            return False
        full = queued_bytes >= cfg.max_batch_bytes or queued >= cfg.max_batch_count
        return full or self.batch_due

    def timer_wait(self, now_ms: int) -> int:
        """The batch timer fired: 0 if a cut is due (the queue went idle or its oldest
        request waited the maximum), else how much longer to wait."""
        cfg = self._config
        due_at = min(self.last_arrival_ms + cfg.batch_timeout_ms,
                     self.queue_since_ms + cfg.batch_max_wait_ms)
        return max(0, due_at - now_ms)

    def batch(self, payloads: list[bytes], now_ms: int,
              last_delivered_ts: int) -> tuple[int, Batch]:
        """The next sequence number and the batch of ``payloads``, timestamped later than
        any batch we proposed or delivered (block times only grow)."""
        ts = max(now_ms, self.last_ts + 1, last_delivered_ts + 1)
        self.last_ts = ts
        seq = self.next_seq
        self.next_seq += 1
        return seq, Batch(ts, tuple(payloads))
