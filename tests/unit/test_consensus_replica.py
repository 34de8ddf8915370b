"""The PBFT replica driven by hand: batching, persistence order, watermarks, checkpoints,
view change edge cases and recovery. A tiny zero-latency pump stands in for the runtime.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from typing import Callable

from pienode.consensus import (
    Broadcast, CancelTimer, Deliver, FetchState, Persist, RecoveredState, Replica, ReplicaConfig,
    Send, SetTimer, TimerId,
)
from pienode.consensus import messages as m
from pienode.consensus.decoding import decode_message
from pienode.consensus.viewchange import compute_reissue
from pienode.encoding import sha256

GENESIS = bytes(32)


def secret(i: str) -> bytes:
    return sha256(i.encode())


def signer(i: str) -> Callable[[bytes], bytes]:
    return lambda body: hmac.new(secret(i), body, hashlib.sha256).digest()


def verifier(i: str, body: bytes, sig: bytes) -> bool:
    return hmac.compare_digest(hmac.new(secret(i), body, hashlib.sha256).digest(), sig)


class Pump:
    """Zero-latency runtime for n replicas; ``drop(src, dst, data)`` filters messages."""

    def __init__(self, n: int = 4, **cfg: int) -> None:
        self.ids = tuple(f"r{i}" for i in range(n))
        self.config = ReplicaConfig(node_ids=self.ids, **cfg)
        self.now = 100_000
        self.replicas = {i: Replica(self.config, i, signer(i), verifier) for i in self.ids}
        self.kv: dict[str, dict[bytes, bytes]] = {i: {} for i in self.ids}
        self.delivered: dict[str, list[Deliver]] = {i: [] for i in self.ids}
        self.states: dict[str, bytes] = {i: GENESIS for i in self.ids}
        self.timers: dict[tuple[str, TimerId], int] = {}
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.actions: dict[str, list[object]] = {i: [] for i in self.ids}
        self.drop: Callable[[str, str, bytes], bool] = lambda s, d, b: False
        self.down: set[str] = set()
        self.fetches: list[str] = []
        for i in self.ids:
            self.apply(i, self.replicas[i].start(self.now))

    def apply(self, node: str, actions: list[object]) -> None:
        self.actions[node].extend(actions)
        for a in actions:
            if isinstance(a, Persist):
                for k, v in a.items:
                    if v is None:
                        self.kv[node].pop(k, None)
                    else:
                        self.kv[node][k] = v
            elif isinstance(a, Send):
                self.queue.append((node, a.to, a.data))
            elif isinstance(a, Broadcast):
                self.queue.extend((node, d, a.data) for d in self.ids if d != node)
            elif isinstance(a, SetTimer):
                self.timers[(node, a.timer)] = self.now + a.delay_ms
            elif isinstance(a, CancelTimer):
                self.timers.pop((node, a.timer), None)
            elif isinstance(a, FetchState):
                self.fetches.append(node)
            elif isinstance(a, Deliver):
                self.delivered[node].append(a)
                self.states[node] = sha256(self.states[node] + a.digest)
                self.apply(node, self.replicas[node].on_executed(a.seq, self.states[node], self.now))

    def transfer(self, node: str) -> None:
        """State transfer: copy the longest peer's certified blocks (verified by the sim)."""
        best = max(self.ids, key=lambda i: len(self.delivered[i]))
        ids = []
        for d in self.delivered[best][len(self.delivered[node]):]:
            self.delivered[node].append(d)
            self.states[node] = sha256(self.states[node] + d.digest)
            ids += [sha256(r) for r in d.batch.requests]
        self.apply(node, self.replicas[node].on_state_transferred(
            len(self.delivered[node]), self.states[node], self.now, ids))

    def flush(self) -> None:
        while self.fetches:
            node = self.fetches.pop(0)
            if node not in self.down:
                self.transfer(node)
        while self.queue:
            src, dst, data = self.queue.popleft()
            if dst in self.down or src in self.down or self.drop(src, dst, data):
                continue
            self.apply(dst, self.replicas[dst].on_message(src, data, self.now))

    def advance(self, ms: int) -> None:
        end = self.now + ms
        self.flush()
        while True:
            due = [(t, k) for k, t in self.timers.items() if t <= end and k[0] not in self.down]
            if not due:
                break
            t, key = min(due, key=lambda e: (e[0], e[1][0], e[1][1].value))
            del self.timers[key]
            self.now = max(self.now, t)
            self.apply(key[0], self.replicas[key[0]].on_timeout(key[1], self.now))
            self.flush()
        self.now = end

    def submit(self, payload: bytes, to: tuple[str, ...] | None = None) -> None:
        for i in to or self.ids:
            if i not in self.down:
                self.apply(i, self.replicas[i].submit(payload, self.now))
        self.flush()

    def restart(self, node: str) -> None:
        st = RecoveredState.from_items(sorted(self.kv[node].items()),
                                       len(self.delivered[node]), self.states[node])
        self.replicas[node] = Replica(self.config, node, signer(node), verifier, restored=st)
        self.timers = {k: v for k, v in self.timers.items() if k[0] != node}
        self.down.discard(node)
        self.apply(node, self.replicas[node].start(self.now))


def test_single_request_commits_within_milliseconds() -> None:
    p = Pump()
    p.submit(b"tx-1")
    assert ("r0", TimerId.BATCH) in p.timers
    p.advance(5)
    assert all([d.batch.requests for d in p.delivered[i]] == [(b"tx-1",)] for i in p.ids)
    d = p.delivered["r1"][0]
    assert d.seq == 1 and d.certificate.seq == 1 and len(d.certificate.commits) >= 3
    assert d.batch.timestamp_ms >= 100_000


def test_full_batch_is_cut_at_once_and_duplicates_are_dropped() -> None:
    p = Pump(max_batch_count=3)
    for k in range(3):
        p.submit(b"tx-%d" % k)
    p.submit(b"tx-0")
    assert p.replicas["r0"].stats["duplicate_request"] == 1
    assert [len(d.batch.requests) for d in p.delivered["r2"]] == [3]
    p.submit(b"tx-0")  # already delivered
    p.advance(50)
    assert [len(d.batch.requests) for d in p.delivered["r2"]] == [3]


def test_own_votes_are_persisted_before_they_are_sent() -> None:
    p = Pump()
    primary, backup = p.replicas["r0"], p.replicas["r1"]
    acts = primary.submit(b"tx", p.now) + primary.on_timeout(TimerId.BATCH, p.now + 5)
    pp_wire = next(a.data for a in acts if isinstance(a, Broadcast))
    kinds = [type(a) for a in acts if isinstance(a, (Persist, Broadcast))]
    assert kinds.index(Persist) < kinds.index(Broadcast)
    out = backup.on_message("r0", pp_wire, p.now + 6)
    assert isinstance(out[0], Persist)
    assert any(k.startswith(b"pp/") for k, _ in out[0].items)
    assert any(isinstance(a, Broadcast) for a in out[1:])


def test_pipeline_stops_at_high_watermark_until_a_checkpoint_is_stable() -> None:
    p = Pump(checkpoint_interval=2, watermark_window=4, max_batch_count=1, max_inflight_batches=100)
    p.drop = lambda s, d, b: s != "r0"  # backups' votes are lost: nothing commits
    for k in range(8):
        p.submit(b"tx-%d" % k)
    p.advance(20)
    assert p.replicas["r0"]._proposer.next_seq - 1 == 4  # h + L with h = 0
    p.drop = lambda s, d, b: False
    p.advance(2000)  # retransmission after STATUS, then checkpoints move the window
    assert len(p.delivered["r3"]) == 8
    assert all(p.replicas[i].stable_checkpoint >= 6 for i in p.ids)


def test_checkpoints_truncate_memory_and_persisted_votes() -> None:
    p = Pump(checkpoint_interval=2, watermark_window=4, max_batch_count=1)
    for k in range(21):
        p.submit(b"tx-%d" % k)
        p.advance(10)
    for i in p.ids:
        r = p.replicas[i]
        assert len(p.delivered[i]) == 21
        assert r.stable_checkpoint == 20 and r.low_watermark == 20
        assert all(s > 20 for s in r._slots) and len(r._slots) <= 4
        assert all(s > 20 for s in r._cps.votes)
        seqs = [int.from_bytes(k[3:], "big") for k in p.kv[i] if k[:3] in (b"pp/", b"pc/", b"oc/")]
        assert seqs and all(s > 20 for s in seqs)


def test_far_checkpoints_from_f_plus_one_trigger_state_fetch() -> None:
    p = Pump(checkpoint_interval=2, watermark_window=4)
    r = p.replicas["r3"]
    d = sha256(b"state-10")
    out: list[object] = []
    for i in ("r0", "r1"):
        cp = m.make_checkpoint(10, d, i, signer(i))
        out += r.on_message(i, m.wire(cp), p.now)
    fetch = [a for a in out if isinstance(a, FetchState)]
    assert fetch == [FetchState(10, d, ("r0", "r1"))]
    assert r.on_message("r2", m.wire(m.make_checkpoint(10, d, "r2", signer("r2"))), p.now) == []
    done = r.on_state_transferred(10, d, p.now + 5)
    assert r.last_delivered_seq == 10
    assert any(isinstance(a, Broadcast) for a in done)  # our own CHECKPOINT for 10


def test_pre_prepare_checks() -> None:
    p = Pump()
    r = p.replicas["r1"]
    batch = m.Batch(p.now, (b"tx",))
    bb = batch.encode()
    not_primary = m.make_pre_prepare(0, 1, sha256(bb), "r2", signer("r2"))
    r.on_message("r2", m.wire(not_primary, bb), p.now)
    assert r.stats["not_primary"] == 1
    bad_digest = m.make_pre_prepare(0, 1, sha256(b"other"), "r0", signer("r0"))
    r.on_message("r0", m.wire(bad_digest, bb), p.now)
    assert r.stats["bad_digest"] == 1
    old = m.Batch(p.now - 60_000, (b"tx",)).encode()
    r.on_message("r0", m.wire(m.make_pre_prepare(0, 1, sha256(old), "r0", signer("r0")), old), p.now)
    assert r.stats["bad_timestamp"] == 1
    forged = m.make_pre_prepare(0, 1, sha256(bb), "r0", signer("r3"))
    r.on_message("r0", m.wire(forged, bb), p.now)
    assert r.stats["bad_signature"] == 1
    assert not r._slots.get(1) or r._slots[1].pre_prepare is None


def test_restarted_backup_never_prepares_a_conflicting_digest() -> None:
    p = Pump()
    b1 = m.Batch(p.now, (b"a",)).encode()
    b2 = m.Batch(p.now, (b"b",)).encode()
    pp1 = m.make_pre_prepare(0, 1, sha256(b1), "r0", signer("r0"))
    pp2 = m.make_pre_prepare(0, 1, sha256(b2), "r0", signer("r0"))
    p.apply("r1", p.replicas["r1"].on_message("r0", m.wire(pp1, b1), p.now))
    p.queue.clear()
    p.restart("r1")
    out = p.replicas["r1"].on_message("r0", m.wire(pp2, b2), p.now)
    assert not any(isinstance(a, Broadcast) for a in out)
    assert p.replicas["r1"].stats["equivocation"] == 1


def test_restarted_primary_continues_after_its_persisted_sequence_numbers() -> None:
    p = Pump(max_batch_count=1)
    p.down = {"r1", "r2"}  # no quorum: proposals stay in flight
    for k in range(3):
        p.submit(b"tx-%d" % k, to=("r0",))
    assert p.replicas["r0"]._proposer.next_seq == 4
    p.restart("r0")
    assert p.replicas["r0"]._proposer.next_seq == 4


def test_crash_restart_of_everyone_resumes_from_persisted_votes() -> None:
    p = Pump(max_batch_count=1)
    p.drop = lambda s, d, b: decode_message(b)[0].__class__ is m.Commit  # commits all lost
    p.submit(b"tx-0")
    p.advance(10)
    assert not p.delivered["r0"]
    p.queue.clear()
    for i in p.ids:
        p.restart(i)
    p.drop = lambda s, d, b: False
    p.advance(3000)
    assert all([d.batch.requests for d in p.delivered[i]] == [(b"tx-0",)] for i in p.ids)


def test_a_store_with_a_new_view_but_not_its_view_change_starts_the_change_again() -> None:
    from pienode.consensus import recovery as keys

    p = Pump()
    p.submit(b"tx-1")
    p.advance(5)
    p.down.add("r1")
    p.kv["r1"][keys.KEY_VIEW] = keys.view_value(1, False)
    assert keys.KEY_VIEW_CHANGE not in p.kv["r1"]
    before = len(p.actions["r1"])
    p.restart("r1")
    r1 = p.replicas["r1"]
    assert (r1.view, r1.active) == (1, False)
    sent = [decode_message(a.data)[0] for a in p.actions["r1"][before:] if isinstance(a, Broadcast)]
    assert [vc.view for vc in sent if isinstance(vc, m.ViewChange)] == [1]
    assert RecoveredState.from_items(sorted(p.kv["r1"].items()), 1, GENESIS).view_change.view == 1


def test_silent_primary_is_replaced_and_view_change_timeouts_double() -> None:
    p = Pump(n=7, view_change_timeout_ms=1000, request_timeout_ms=500)
    p.down = {"r0", "r1"}  # primaries of views 0 and 1
    p.submit(b"tx")
    p.advance(20_000)
    r = p.replicas["r4"]
    assert r.view == 2 and r.active and r.primary == "r2"
    assert all([d.batch.requests for d in p.delivered[i]] == [(b"tx",)] for i in ("r2", "r3", "r6"))
    delays = [a.delay_ms for a in p.actions["r4"] if isinstance(a, SetTimer) and a.timer is TimerId.VIEW_CHANGE]
    assert delays[:2] == [1000, 2000]


def _view_changes(p: Pump, view: int, who: tuple[str, ...]) -> tuple[m.ViewChange, ...]:
    return tuple(m.make_view_change(view, 0, m.GENESIS_DIGEST, (), (), i, signer(i)) for i in who)


def test_new_view_is_validated_by_recomputing_the_reissued_pre_prepares() -> None:
    p = Pump()
    r = p.replicas["r2"]
    vcs = _view_changes(p, 1, ("r0", "r1", "r3"))
    forged_o = (m.make_pre_prepare(1, 1, sha256(b"x"), "r1", signer("r1")),)
    bad = m.make_new_view(1, vcs, forged_o, "r1", signer("r1"))
    r.on_message("r1", m.wire(bad), p.now)
    assert r.stats["bad_new_view"] == 1 and r.view == 0
    too_few = m.make_new_view(1, vcs[:2], (), "r1", signer("r1"))
    r.on_message("r1", m.wire(too_few), p.now)
    assert r.stats["bad_new_view"] == 2
    good = m.make_new_view(1, vcs, (), "r1", signer("r1"))
    r.on_message("r1", m.wire(good), p.now)
    assert r.view == 1 and r.active and r.primary == "r1"


def test_view_change_with_a_forged_prepared_certificate_is_refused() -> None:
    p = Pump()
    r = p.replicas["r2"]
    d = sha256(b"evil")
    pp = m.make_pre_prepare(0, 1, d, "r0", signer("r0"))
    prepares = (m.make_prepare(0, 1, d, "r1", signer("r1")), m.make_prepare(0, 1, d, "r3", signer("r1")))
    vc = m.make_view_change(1, 0, m.GENESIS_DIGEST, (), (m.PreparedCert(pp, prepares),), "r1", signer("r1"))
    r.on_message("r1", m.wire(vc), p.now)
    assert r.stats["bad_view_change"] == 1


def test_reissue_takes_the_highest_view_and_fills_gaps_with_null_batches() -> None:
    def cert(view: int, seq: int, digest: bytes) -> m.PreparedCert:
        primary = "r%d" % (view % 4)
        pp = m.make_pre_prepare(view, seq, digest, primary, signer(primary))
        preps = tuple(m.make_prepare(view, seq, digest, i, signer(i))
                      for i in ("r0", "r1", "r2", "r3") if i != primary)[:2]
        return m.PreparedCert(pp, preps)

    a, b, c = sha256(b"a"), sha256(b"b"), sha256(b"c")
    vc1 = m.make_view_change(3, 0, m.GENESIS_DIGEST, (), (cert(0, 1, a), cert(0, 3, c)), "r1", signer("r1"))
    vc2 = m.make_view_change(3, 0, m.GENESIS_DIGEST, (), (cert(1, 1, b),), "r2", signer("r2"))
    base, reissue = compute_reissue([vc1, vc2])
    assert reissue == [(1, b), (2, m.NULL_DIGEST), (3, c)]


def test_replica_joins_a_view_change_once_f_plus_one_others_ask() -> None:
    p = Pump()
    r = p.replicas["r3"]
    vcs = _view_changes(p, 2, ("r0", "r1"))
    r.on_message("r0", m.wire(vcs[0]), p.now)
    assert r.view == 0 and r.active
    p.apply("r3", r.on_message("r1", m.wire(vcs[1]), p.now))
    assert r.view == 2 and not r.active
    assert b"vc" in p.kv["r3"]  # our VIEW-CHANGE is durable before it is broadcast


def test_stale_timer_is_ignored() -> None:
    p = Pump()
    r = p.replicas["r1"]
    assert r.on_timeout(TimerId.VIEW_CHANGE, p.now) == []
    assert r.stats["stale_timer"] == 1


def test_introspection_for_status() -> None:
    p = Pump()
    p.submit(b"tx", to=("r1",))
    r = p.replicas["r1"]
    assert (r.view, r.primary, r.stable_checkpoint, r.low_watermark) == (0, "r0", 0, 0)
    assert r.pending_count == 1 and r.last_delivered_seq == 0


def _votes(p: Pump, node: str) -> list[object]:
    out = []
    for a in p.actions[node]:
        if isinstance(a, Broadcast):
            msg, _ = decode_message(a.data)
            if isinstance(msg, (m.Prepare, m.Commit, m.ViewChange)):
                out.append(msg)
    return out


def test_wiped_node_abstains_in_views_it_may_have_voted_in_then_rejoins() -> None:
    p = Pump(max_batch_count=1, request_timeout_ms=500, view_change_timeout_ms=500)
    for k in range(3):
        p.submit(b"tx-%d" % k)
        p.advance(10)
    # r3's home is wiped: store and ledger gone; it restarts amnesic.
    p.kv["r3"].clear()
    p.delivered["r3"], p.states["r3"] = [], GENESIS
    p.timers = {k: v for k, v in p.timers.items() if k[0] != "r3"}
    p.replicas["r3"] = Replica(p.config, "r3", signer("r3"), verifier, amnesic=True)
    p.actions["r3"] = []
    p.apply("r3", p.replicas["r3"].start(p.now))
    p.advance(2000)
    p.submit(b"tx-3")
    p.advance(2000)
    assert [d.seq for d in p.delivered["r3"]] == [1, 2, 3, 4]  # caught up without voting
    assert p.replicas["r3"]._floor.floor == 0
    assert not _votes(p, "r3")
    p.down = {"r0"}  # the primary dies: view 1, where r3 votes again
    p.submit(b"tx-4")
    p.advance(10_000)
    assert p.replicas["r3"].view >= 1 and p.replicas["r3"].active
    assert [d.seq for d in p.delivered["r3"]][-1] == 5
    assert all(v.view >= 1 for v in _votes(p, "r3")) and _votes(p, "r3")


def test_a_queued_firing_of_a_rearmed_timer_is_not_taken_early() -> None:
    p = Pump()
    r = p.replicas["r1"]
    deadline = r._out.timers[TimerId.STATUS]
    out = r.on_timeout(TimerId.STATUS, deadline - 100)
    assert out == [SetTimer(TimerId.STATUS, 100)] and r.stats["early_timer"] == 1
    assert any(isinstance(a, Broadcast) for a in r.on_timeout(TimerId.STATUS, deadline))


def test_memory_and_store_stay_bounded_over_a_long_run() -> None:
    p = Pump(checkpoint_interval=2, watermark_window=4, max_batch_count=1, recent_request_ids=50)
    for k in range(300):
        p.submit(b"tx-%d" % k)
        p.advance(6)
    for i in p.ids:
        r = p.replicas[i]
        assert len(p.delivered[i]) == 300
        assert len(r._slots) <= 4 and len(r._cps.votes) <= 2 and len(r._cps.own) <= 2
        assert len(r._pool._recent) <= 50 and not r._pool.pending
        assert len(p.kv[i]) <= 3 * 4 + 6


def test_regression_seed_4224_lost_checkpoints_are_retransmitted() -> None:
    # Every CHECKPOINT was lost once: no replica had a stable checkpoint, so none had a
    # proof to retransmit, and everyone stopped at the high watermark for good.
    p = Pump(checkpoint_interval=2, watermark_window=4, max_batch_count=1)
    p.drop = lambda s, d, b: isinstance(decode_message(b)[0], m.Checkpoint)
    for k in range(4):
        p.submit(b"tx-%d" % k)
        p.advance(10)
    assert all(p.replicas[i].stable_checkpoint == 0 for i in p.ids)
    p.drop = lambda s, d, b: False
    for k in range(4, 8):
        p.submit(b"tx-%d" % k)
    p.advance(3000)
    assert all(len(p.delivered[i]) == 8 and p.replicas[i].stable_checkpoint >= 4 for i in p.ids)
