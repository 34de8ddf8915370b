"""Peer-network vocabulary: addresses, tuning, counters, channels and errors.

Owns: the plain data that the link and the network share and that callers configure.
Never does I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from pienode.crypto.keys import PublicKey
from pienode.errors import NetError, TooLarge

#: Channels multiplex one link. Consensus traffic goes ahead of everything else.
CHANNEL_CONSENSUS = 0
CHANNEL_SYNC = 1
CHANNEL_FILES = 2
#: Channels whose messages use the priority queue (see ``Link``).
PRIORITY_CHANNELS = frozenset({CHANNEL_CONSENSUS})

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a genesis node listens for peers, and the key it must prove it holds."""

    host: str
    port: int
    public_key: PublicKey


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Tuning of a ``PeerNetwork``. Every field has a safe default.

    Attributes:
        max_frame: largest frame (ciphertext incl. tag) accepted or sent. Must hold a 1 MB
            PBFT batch plus overhead; a bigger length prefix closes the link.
        queue_limit: messages per per-peer queue (each peer has a priority and a bulk queue).
        queue_bytes: payload bytes per per-peer queue.
        coalesce_bytes: soft limit on one record when several messages are waiting.
        handshake_timeout: seconds a new connection may take to authenticate.
        max_pending_handshakes: unauthenticated connections held at once; more are refused.
        keepalive_interval: seconds of send silence after which a ping is sent.
        idle_timeout: seconds of receive silence after which the link is declared dead.
        backoff_initial, backoff_max: reconnect delay range (doubling, with jitter).
        max_inflight_requests: requests from one peer served concurrently; more wait
            (the reader stops reading that peer). Answers count against the queue bounds.
        network_id: bound into the handshake, so two consortia never link by mistake.
        view_channels: channels whose received payloads are handed over as read-only
            memoryviews of their frame instead of copied into bytes (the files channel:
            its handlers take any bytes-like payload; a pushed upload is not copied).
    """

    max_frame: int = 4 * MIB
    queue_limit: int = 8192
    queue_bytes: int = 64 * MIB
    coalesce_bytes: int = 256 * KIB
    handshake_timeout: float = 5.0
    max_pending_handshakes: int = 64
    keepalive_interval: float = 5.0
    idle_timeout: float = 30.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    max_inflight_requests: int = 32
    network_id: str = "pie"
    view_channels: frozenset[int] = frozenset({CHANNEL_FILES})

    def __post_init__(self) -> None:
        if self.max_frame < 64 * KIB or self.max_frame >= 1 << 32:
            raise ValueError("max_frame must be between 64 KiB and 4 GiB")
        if self.queue_limit < 1 or self.queue_bytes < 1 or self.max_inflight_requests < 1:
            raise ValueError("queue and inflight limits must be positive")
        if self.coalesce_bytes < 1:
            raise ValueError("coalesce_bytes must be positive")
        if min(self.handshake_timeout, self.keepalive_interval, self.idle_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")


@dataclass(slots=True)
class NetStats:
    """Counters; monotonic for the life of a ``PeerNetwork``. Read them, never reset them."""

    connections_in: int = 0
    handshakes_ok: int = 0
    handshake_failures: int = 0  # garbage, unknown id, bad signature, timeout, refused
    handshake_timeouts: int = 0
    handshakes_refused_busy: int = 0
    reconnects: int = 0  # links established to a peer that had a link before
    links_closed: int = 0
    frames_in: int = 0
    frames_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    drops_queue_full: int = 0
    drops_not_connected: int = 0
    bad_frames: int = 0  # oversized, truncated, failed tag, malformed record
    handler_errors: int = 0  # our own on_message/on_request raised
    requests_out: int = 0
    requests_in: int = 0
    request_timeouts: int = 0
    unexpected_responses: int = 0

    @property
    def drops(self) -> int:
        return self.drops_queue_full + self.drops_not_connected

    def snapshot(self) -> dict[str, int]:
        out = asdict(self)
        out["drops"] = self.drops
        return out


STAT_NAMES = tuple(f.name for f in fields(NetStats))


class PeerUnavailable(NetError):
    """The peer has no live link, or its link went down before the answer came."""


class RequestTimeout(NetError):
    """No response within the caller's timeout."""


class RemoteRequestError(NetError):
    """The peer's request handler failed; ``message`` is what it chose to tell us."""


class QueueFull(NetError):
    """The per-peer queue is full; the request was not sent."""


class PayloadTooLarge(NetError, TooLarge):
    """A payload that cannot fit in one frame (a caller's bug, not a peer's)."""
