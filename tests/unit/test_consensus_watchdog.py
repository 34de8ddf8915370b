"""The request timer's verdict on the primary (pienode/consensus/watchdog.py)."""

from __future__ import annotations

from pienode.consensus.watchdog import PrimaryWatch, Verdict

T = 1000


def test_waits_until_t_then_forwards_until_2t() -> None:
    w = PrimaryWatch(T)
    assert w.check(b"r1", 0, 1, 400) == Verdict(False, None, 600)
    assert w.check(b"r1", 0, 1, 1500) == Verdict(True, None, 500)


def test_a_silent_primary_is_replaced_at_2t() -> None:
    w = PrimaryWatch(T)
    w.check(b"r1", 0, 1, 1000)
    assert w.check(b"r1", 0, 1, 2000) == Verdict(True, "primary_stalled", 0)


def test_a_new_view_gives_pending_requests_a_fresh_grace_period() -> None:
    w = PrimaryWatch(T)
    w.view_started_ms = 1800
    assert w.check(b"r1", 0, 1, 2000) == Verdict(False, None, 800)


def test_a_primary_that_delivers_others_but_skips_ours_is_censoring() -> None:
    w = PrimaryWatch(T)
    w.check(b"r1", 0, 10, 1000)  # overdue, 10 pending here: watched from now
    w.delivered(2 * 10 + 16, 1900)  # exactly the allowance: overload, not censoring
    assert w.check(b"r1", 0, 10, 2000) == Verdict(True, None, T // 2)
    w.delivered(1, 2100)
    assert w.check(b"r1", 0, 10, 2200) == Verdict(True, "primary_censoring", 0)


def test_a_different_oldest_request_is_watched_afresh() -> None:
    w = PrimaryWatch(T)
    w.check(b"r1", 0, 1, 1000)
    w.delivered(100, 1900)
    w.check(b"r2", 0, 1, 1950)  # r1 committed; r2 watched from this mark
    assert w.check(b"r2", 0, 1, 2000) == Verdict(True, None, T // 2)
