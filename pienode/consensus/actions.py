"""What a replica asks its runtime to do: the only output of the state machine.

Owns: the action dataclasses, ``TimerId``, and ``Outbox``, where a replica collects the
actions of one entry point.
Never: performs any of them (no I/O here; the runtime carries actions out in list order).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pienode.consensus.certificate import CommitCertificate
from pienode.consensus.messages import Batch, wire


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


class Outbox:
    """The actions of one entry point in order, and the writes of its leading ``Persist``
    (one synced batch before anything is sent); and the deadline of every armed timer, kept
    across entry points so that a stale or early firing is told from a due one."""

    def __init__(self) -> None:
        #: The runtime's clock reading at the current entry point.
        self.now = 0
        self.actions: list[Action] = []
        self.writes: list[tuple[bytes, bytes | None]] = []
        self.timers: dict[TimerId, int] = {}

    def begin(self, now_ms: int) -> None:
        self.now = now_ms
        self.actions = []
        self.writes = []

    def finish(self) -> list[Action]:
        actions = self.actions
        if self.writes:
            actions.insert(0, Persist(tuple(self.writes)))
        self.actions = []
        self.writes = []
        return actions

    def set_timer(self, timer: TimerId, delay_ms: int) -> None:
        delay_ms = max(1, int(delay_ms))
        self.timers[timer] = self.now + delay_ms
        self.actions.append(SetTimer(timer, delay_ms))

    def cancel_timer(self, timer: TimerId) -> None:
        if self.timers.pop(timer, None) is not None:
            self.actions.append(CancelTimer(timer))

    def broadcast(self, msg: object, batch_bytes: bytes | None = None) -> None:
        self.actions.append(Broadcast(wire(msg, batch_bytes)))
