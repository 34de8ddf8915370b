"""How a replica collects the actions of one entry point (pienode/consensus/actions.py)."""

from __future__ import annotations

from pienode.consensus import messages as m
from pienode.consensus.actions import (
    Broadcast, CancelTimer, Outbox, Persist, Send, SetTimer, TimerId,
)
from tests.consensus_helpers import cp


def test_writes_become_one_persist_ahead_of_every_other_action() -> None:
    out = Outbox()
    out.begin(1000)
    out.broadcast(cp("r0", 4))
    out.writes.append((b"k1", b"v1"))
    out.actions.append(Send("r1", b"x"))
    out.writes.append((b"k2", None))
    actions = out.finish()
    assert actions == [Persist(((b"k1", b"v1"), (b"k2", None))),
                       Broadcast(m.wire(cp("r0", 4))), Send("r1", b"x")]
    assert out.finish() == []  # nothing carries over to the next entry point
    out.begin(2000)
    out.actions.append(Send("r1", b"y"))
    assert out.finish() == [Send("r1", b"y")]  # no empty Persist


def test_timers_remember_their_deadlines_across_entry_points() -> None:
    out = Outbox()
    out.begin(1000)
    out.set_timer(TimerId.BATCH, 0)  # at least 1 ms
    out.cancel_timer(TimerId.REQUEST)  # not armed: no action
    assert out.finish() == [SetTimer(TimerId.BATCH, 1)]
    assert out.timers == {TimerId.BATCH: 1001}
    out.begin(1500)
    out.cancel_timer(TimerId.BATCH)
    assert out.finish() == [CancelTimer(TimerId.BATCH)] and out.timers == {}
