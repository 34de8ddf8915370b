"""View-change bookkeeping and building on their own (viewchange_log.py, viewchange.py)."""

from __future__ import annotations

import hashlib
import hmac

from pienode.consensus import messages as m
from pienode.consensus.config import ReplicaConfig
from pienode.consensus.log import Slot
from pienode.consensus.viewchange import (
    build_new_view, build_view_change, compute_reissue, in_flight_requests, new_view_ok,
    newest_timestamp,
)
from pienode.consensus.viewchange_log import MAX_BACKOFF_EXP, ViewChangeLog

IDS = ("r0", "r1", "r2", "r3")
CONFIG = ReplicaConfig(node_ids=IDS, view_change_timeout_ms=100)
D1 = bytes([1]) * 32


def signer(i: str):  # type: ignore[no-untyped-def]
    return lambda body: hmac.new(i.encode(), body, hashlib.sha256).digest()


def sig_ok(i: str, body: bytes, sig: bytes) -> bool:
    return hmac.compare_digest(signer(i)(body), sig)


def vc(replica: str, view: int) -> m.ViewChange:
    return m.make_view_change(view, 0, m.GENESIS_DIGEST, (), (), replica, signer(replica))


def counting() -> tuple[list[str], object]:
    calls: list[str] = []

    def check(i: str, body: bytes, sig: bytes) -> bool:
        calls.append(i)
        return sig_ok(i, body, sig)
    return calls, check


def test_screen_drops_old_duplicate_and_forged_view_changes() -> None:
    log = ViewChangeLog(CONFIG, sig_ok)
    assert log.screen(vc("r1", 1), view=1, active=True) == "old_view_change"
    assert log.screen(vc("r1", 0), view=1, active=False) == "old_view_change"
    assert log.screen(vc("r1", 1), view=1, active=False) is None
    log.by_replica["r1"] = vc("r1", 2)
    assert log.screen(vc("r1", 2), view=1, active=False) == "duplicate"
    forged = m.make_view_change(3, 0, m.GENESIS_DIGEST, (), (), "r1", signer("r2"))
    assert log.screen(forged, view=1, active=False) == "bad_view_change"


def test_verified_view_changes_are_remembered_and_the_cache_is_bounded() -> None:
    calls, check = counting()
    log = ViewChangeLog(CONFIG, check)  # type: ignore[arg-type]
    one = vc("r1", 1)
    assert log.verified(one) and log.verified(one)
    assert calls == ["r1"]  # checked once
    for v in range(2, 4 * CONFIG.n + 4):
        assert log.verified(vc("r2", v))
    assert len(log._verified) <= 4 * CONFIG.n + 1
    log.entered(m.make_new_view(1, (), (), "r1", signer("r1")))
    assert log.verified(one) and calls.count("r1") == 2  # forgotten with the new view


def test_join_target_is_the_highest_view_f_plus_one_others_reached() -> None:
    log = ViewChangeLog(CONFIG, sig_ok)
    log.started(vc("r0", 1))
    log.by_replica["r1"] = vc("r1", 5)
    assert log.join_target(0, "r0") is None  # one other is not enough (f = 1)
    log.by_replica["r2"] = vc("r2", 3)
    assert log.join_target(0, "r0") == 3
    assert log.join_target(3, "r0") is None
    assert log.wanting(3) == 2 and log.wanting(1) == 3
    assert [v.replica for v in log.for_view(1)] == ["r0"]


def test_timeout_doubles_per_failure_up_to_the_cap() -> None:
    log = ViewChangeLog(CONFIG, sig_ok)
    assert log.timeout_ms() == 100
    log.failures = 2
    assert log.timeout_ms() == 400
    log.failures = 50
    assert log.timeout_ms() == 100 << MAX_BACKOFF_EXP


def test_entering_a_view_keeps_only_later_view_changes() -> None:
    log = ViewChangeLog(CONFIG, sig_ok)
    log.started(vc("r0", 1))
    log.by_replica["r2"] = vc("r2", 2)
    log.failures = 3
    nv = m.make_new_view(1, (), (), "r1", signer("r1"))
    log.entered(nv)
    assert log.own is None and log.new_view is nv and log.failures == 0
    assert list(log.by_replica) == ["r2"]
    log.started(vc("r0", 2))
    assert log.new_view is None and log.own is not None and log.by_replica["r0"].view == 2


def _prepared_slot(seq: int, view: int, digest: bytes) -> Slot:
    slot = Slot(seq)
    pp = m.make_pre_prepare(view, seq, digest, CONFIG.primary_of(view), signer(CONFIG.primary_of(view)))
    slot.pre_prepare = pp
    prepares = tuple(m.make_prepare(view, seq, digest, r, signer(r))
                     for r in IDS if r != pp.replica)[:2]
    slot.prepared_cert = m.PreparedCert(pp, prepares)
    return slot


def test_our_view_change_reports_what_we_prepared_above_the_stable_checkpoint() -> None:
    slots = {s: _prepared_slot(s, 0, D1) for s in (1, 3)}
    slots[2] = Slot(2)
    own = build_view_change(1, slots, 0, m.GENESIS_DIGEST, (), "r3", signer("r3"))
    assert [c.pre_prepare.seq for c in own.prepared] == [1, 3]
    assert ViewChangeLog(CONFIG, sig_ok).verified(own)


def test_the_new_view_we_build_is_the_one_every_backup_accepts() -> None:
    slots = {2: _prepared_slot(2, 0, D1)}
    own = build_view_change(1, {}, 0, m.GENESIS_DIGEST, (), "r1", signer("r1"))
    same = [own, vc("r3", 1), build_view_change(1, slots, 0, m.GENESIS_DIGEST, (), "r2",
                                                signer("r2")), vc("r0", 1)]
    nv, base, reissue = build_new_view(1, own, same, CONFIG.quorum, "r1", signer("r1"))
    assert [v.replica for v in nv.view_changes] == ["r1", "r0", "r2"]  # ours, lowest others
    assert reissue == [(1, m.NULL_DIGEST), (2, D1)]
    assert (base, reissue) == compute_reissue(nv.view_changes)
    log = ViewChangeLog(CONFIG, sig_ok)
    assert new_view_ok(nv, CONFIG, sig_ok, log.verified) == (base, reissue)


def test_a_new_primary_takes_over_only_batches_of_its_view() -> None:
    slots: dict[int, Slot] = {}
    for seq, view, ts in ((1, 1, 10), (2, 1, 30), (3, 0, 20), (4, 1, 5)):
        batch = m.Batch(ts, (f"req{seq}".encode(),))
        data = batch.encode()
        slot = slots[seq] = Slot(seq)
        slot.pre_prepare = m.make_pre_prepare(view, seq, D1, "r1",
                                              signer("r1"))
        slot.batches[D1] = (batch, data)
    del slots[4].batches[D1]
    assert in_flight_requests(slots, 1, 1) == [(b"req2",)]
    assert newest_timestamp(slots, 0) == 30 and newest_timestamp(slots, 99) == 99
