"""What a replica asks its runtime to do: the only output of the state machine.

Owns: the action dataclasses and ``TimerId``.
Never: performs any of them (no I/O here; the runtime carries actions out in list order).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pienode.consensus.certificate import CommitCertificate
from pienode.consensus.messages import Batch


class TimerId(enum.Enum):
    BATCH = "batch"
    REQUEST = "request"
    VIEW_CHANGE = "view_change"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send ``data`` to every other replica (never to ourselves)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SetTimer:
    """(Re-)arm ``timer`` to fire ``delay_ms`` from now, replacing any earlier arming."""

    timer: TimerId
    delay_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: TimerId


@dataclass(frozen=True, slots=True)
class Persist:
    """Write these key/value pairs durably (value None = delete) in one atomic batch.

    Must be completed (synced) before any later action of the same list is carried out:
    this is how a replica's own votes reach disk before they reach the network.
    """

    items: tuple[tuple[bytes, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Batch ``seq`` is committed: execute it as block ``seq``. Contiguous, exactly once."""

    seq: int
    view: int
    batch: Batch
    digest: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class FetchState:
    """We are behind: fetch certified blocks up to ``target_seq`` from ``peers``.

    The runtime answers with ``Replica.on_state_transferred`` (with whatever height it
    reached, even if short of the target). Until then the replica delivers nothing.
    """

    target_seq: int
    target_digest: bytes | None
    peers: tuple[str, ...]


Action = Send | Broadcast | SetTimer | CancelTimer | Persist | Deliver | FetchState
