"""Replica configuration: the fixed parameters every replica of one consortium shares.

Owns: ``ReplicaConfig`` and the quorum arithmetic derived from it.
Never: reads files, the environment or the clock (the node's config layer builds this).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pienode.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """Parameters of the PBFT replica group.

    ``node_ids`` is ordered: the primary of view ``v`` is ``node_ids[v % n]``
    (Castro-Liskov §4.1). Times are milliseconds of the runtime's clock.
    """

    node_ids: tuple[str, ...]
    #: K: a checkpoint every K sequence numbers (§4.3).
    checkpoint_interval: int = 64
    #: L: sequence numbers accepted lie in (h, h + L], h = stable checkpoint (§4.3).
    #: 0 means 2K (room for the next checkpoint to stabilise while the pipeline runs).
    watermark_window: int = 0
    max_batch_bytes: int = 1_000_000
    max_batch_count: int = 2000
    #: The primary cuts a non-empty batch once no request arrived for this long (idle)...
    batch_timeout_ms: int = 5
    #: ...or once its oldest request waited this long, so under steady load batches grow
    #: (fewer signatures per request) while a lone request still waits only ~5 ms.
    batch_max_wait_ms: int = 20
    #: Batches the primary keeps proposed but not yet delivered; while full, requests
    #: accumulate, so batches grow with load (self-clocking batching).
    max_inflight_batches: int = 8
    #: Base view-change timeout, doubled per consecutive view change that fails (§4.5.2).
    view_change_timeout_ms: int = 2000
    #: A request pending this long is forwarded to the primary; twice this long starts a
    #: view change (§4.4, "backups ... start a timer").
    request_timeout_ms: int = 2000
    #: Period of STATUS messages that drive retransmission after lost messages.
    status_interval_ms: int = 500
    max_clock_skew_ms: int = 30_000
    max_pending_requests: int = 200_000
    max_request_bytes: int = 1_000_000
    #: Delivered request ids remembered for de-duplication (bounded memory).
    recent_request_ids: int = 200_000
    #: How long a FetchState may stay unanswered before the replica asks again.
    fetch_retry_ms: int = 5000
    #: Derived in __post_init__ (hot paths read them per message).
    n: int = field(init=False, repr=False, compare=False)
    f: int = field(init=False, repr=False, compare=False)
    quorum: int = field(init=False, repr=False, compare=False)
    weak_quorum: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = self.node_ids
        if not isinstance(ids, tuple) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise ConfigError("node_ids must be a non-empty tuple of non-empty str")
        if len(set(ids)) != len(ids):
            raise ConfigError("node_ids must be distinct")
        k = self.checkpoint_interval
        if k < 1:
            raise ConfigError("checkpoint_interval must be >= 1")
        if self.watermark_window == 0:
            object.__setattr__(self, "watermark_window", 2 * k)
        if self.watermark_window < k:
            raise ConfigError("watermark_window must be at least checkpoint_interval")
        n = len(ids)
        f = (n - 1) // 3
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "f", f)
        # quorum: the smallest group any two of which share f+1 replicas: 2f+1 when
        # n = 3f+1; for other n, 2f+1 would be too small (two quorums could share only
        # faulty replicas), so it is ceil((n + f + 1) / 2).
        object.__setattr__(self, "quorum", (n + f) // 2 + 1)
        # weak quorum: f+1, so at least one correct replica is among them.
        object.__setattr__(self, "weak_quorum", f + 1)
        for name in (
            "max_batch_bytes", "max_batch_count", "batch_timeout_ms", "batch_max_wait_ms",
            "max_inflight_batches",
            "view_change_timeout_ms", "request_timeout_ms", "status_interval_ms",
            "max_clock_skew_ms", "max_pending_requests", "max_request_bytes",
            "recent_request_ids", "fetch_retry_ms",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")

    def primary_of(self, view: int) -> str:
        return self.node_ids[view % self.n]
