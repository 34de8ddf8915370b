"""The PBFT replica: a pure state machine (Castro-Liskov, OSDI'99 / TOCS'02).

Owns: the protocol state of one replica and the order in which it acts: batching client
requests (primary), the three-phase normal case (§4.2), checkpoints and log truncation
(§4.3), view changes (§4.4) and the retransmission that keeps lost messages from stalling
anyone. The decisions themselves live in pure modules it calls with explicit state:
``votes`` (which votes count, certificates), ``proposer`` (when the primary cuts a batch),
``checkpoints`` (stable checkpoints, state transfer), ``viewchange`` / ``viewchange_log``
(view changes), ``retransmit`` (who is stalled, what a stalled peer gets), ``watchdog``
(the request timer's verdict), ``recovery`` (what is persisted, the amnesic vote floor).

Each entry point takes the runtime's clock reading ``now_ms`` and returns the actions to
carry out, in order; at most one ``Persist`` comes first, so our votes reach disk before
any message that carries them.

Never: imports asyncio, sockets, a clock or a database; raises on a peer's bad message
(it is discarded and counted in ``stats``). A broken invariant of our own raises.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from pienode.consensus import recovery as keys
from pienode.consensus import retransmit, votes
from pienode.consensus.actions import (
    Action, Broadcast, Deliver, FetchState, Outbox, Send, TimerId,
)
from pienode.consensus.certificate import verify_certificate
from pienode.consensus.checkpoints import CheckpointLog, StateFetch
from pienode.consensus.codec import MessageError, pack
from pienode.consensus.config import ReplicaConfig
from pienode.consensus.decoding import decode_message
from pienode.consensus.log import Slot
from pienode.consensus.messages import (
    GENESIS_DIGEST, NULL_BATCH, NULL_BATCH_BYTES, NULL_DIGEST, BatchFetch, BatchReply, Checkpoint,
    CheckpointProof, Commit, Committed, Forward, NewView, PrePrepare, Prepare, Status, ViewChange,
    make_batch_fetch, make_batch_reply, make_checkpoint, make_commit, make_forward,
    make_pre_prepare, make_prepare, make_status, wire,
)
from pienode.consensus.proposer import Proposer
from pienode.consensus.recovery import RecoveredState, VoteFloor, rebuild_slots
from pienode.consensus.requests import RequestPool
from pienode.consensus.viewchange import (
    build_new_view, build_view_change, checkpoint_proof_ok, in_flight_requests, new_view_ok,
    newest_timestamp,
)
from pienode.consensus.viewchange_log import ViewChangeLog
from pienode.consensus.watchdog import PrimaryWatch
from pienode.encoding import sha256
from pienode.errors import ConsensusError

Signer = Callable[[bytes], bytes]
Verifier = Callable[[str, bytes, bytes], bool]


class Replica:
    """One PBFT replica. See the module docstring and ``docs`` in the package README."""

    def __init__(self, config: ReplicaConfig, node_id: str, signer: Signer, verifier: Verifier,
                 *, restored: RecoveredState | None = None, amnesic: bool = False) -> None:
        """Args:
            restored: durable state read back after a restart (``RecoveredState.from_items``).
            amnesic: this node lost its consensus store (home wiped) after having run
                before. It may have voted before the wipe, so it casts no vote in any view
                up to the highest view f+1 peers report, and joins from the next view on.
        """
        if node_id not in config.node_ids:
            raise ConsensusError("node_id is not a member", node_id=node_id)
        self.config = config
        self.node_id = node_id
        self._sign = signer
        self._verifier = verifier
        self.stats: Counter[str] = Counter()
        self.view = 0
        self.active = True
        self.stable_checkpoint = 0
        self._stable_digest = GENESIS_DIGEST
        self._stable_proof: tuple[Checkpoint, ...] = ()
        self.last_delivered_seq = 0
        self.last_executed_seq = 0
        self._last_delivered_ts = 0
        self._slots: dict[int, Slot] = {}
        self._cps = CheckpointLog()
        self._vcs = ViewChangeLog(config, verifier)
        self._pool = RequestPool(config.max_pending_requests, config.recent_request_ids)
        self._proposer = Proposer(config)
        self._watch = PrimaryWatch(config.request_timeout_ms)
        self._fetch = StateFetch(config.fetch_retry_ms)
        self._budget = retransmit.Budget(retransmit.RETRANSMIT_CAP, config.status_interval_ms)
        self._floor = VoteFloor(amnesic)
        self._progress = retransmit.Progress()
        self._started = False
        self._pending_vc: int | None = None
        self._out = Outbox()
        if restored is not None:
            self._restore(restored)

    # ---- introspection -------------------------------------------------------------------

    @property
    def primary(self) -> str:
        return self.config.primary_of(self.view)

    @property
    def low_watermark(self) -> int:
        return self.stable_checkpoint

    @property
    def high_watermark(self) -> int:
        return self.stable_checkpoint + self.config.watermark_window

    @property
    def pending_count(self) -> int:
        return len(self._pool)

    @property
    def is_primary(self) -> bool:
        return self.active and self.config.node_ids[self.view % self.config.n] == self.node_id

    # ---- entry points --------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Action]:
        """Arm the periodic timers (any other entry point does this on first use)."""
        self._begin(now_ms)
        return self._out.finish()

    def submit(self, request_payload: bytes, now_ms: int) -> list[Action]:
        """A client request reached this node (directly or gossiped by a peer node)."""
        self._begin(now_ms)
        self._add_request(request_payload)
        return self._out.finish()

    def on_message(self, sender_id: str, data: bytes, now_ms: int) -> list[Action]:
        """Wire bytes from the authenticated peer ``sender_id``. Never raises on bad input."""
        self._begin(now_ms)
        try:
            self._dispatch(sender_id, data)
        except MessageError:
            self.stats["decode"] += 1
        return self._out.finish()

    def on_timeout(self, timer: TimerId, now_ms: int) -> list[Action]:
        self._begin(now_ms)
        deadline = self._out.timers.pop(timer, None)
        if deadline is None:
            self.stats["stale_timer"] += 1
        elif now_ms + 1 < deadline:
            # A firing of an earlier arming that was already queued when we re-armed it.
            self.stats["early_timer"] += 1
            self._out.set_timer(timer, deadline - now_ms)
        elif timer is TimerId.STATUS:
            self._status_tick()
        elif timer is TimerId.BATCH:
            self._batch_timer()
        elif timer is TimerId.REQUEST:
            self._request_timeout()
        elif timer is TimerId.VIEW_CHANGE:
            if not self.active:
                self._vcs.failures += 1
                self._start_view_change(self.view + 1)
        return self._out.finish()

    def on_executed(self, seq: int, state_digest: bytes, now_ms: int) -> list[Action]:
        """The runtime executed batch ``seq``; ``state_digest`` is the resulting block hash."""
        self._begin(now_ms)
        self.last_executed_seq = max(self.last_executed_seq, seq)
        self._own_checkpoint(seq, state_digest)
        return self._out.finish()

    def on_state_transferred(self, seq: int, state_digest: bytes, now_ms: int,
                             committed_request_ids: Iterable[bytes] = ()) -> list[Action]:
        """The runtime installed certified blocks up to ``seq`` (answer to ``FetchState``).

        ``committed_request_ids`` (sha256 of each request in the installed blocks) lets the
        replica drop those from its pending set so they do not trip the request timer.
        """
        self._begin(now_ms)
        self._fetch.pending = None
        self._pool.forget(committed_request_ids)
        if seq > self.last_delivered_seq:
            self.last_delivered_seq = seq
            self.last_executed_seq = max(self.last_executed_seq, seq)
            self._own_checkpoint(seq, state_digest)
            self._watch.view_started_ms = now_ms  # fresh grace period for pending requests
        self._try_deliver()
        return self._out.finish()

    # ---- plumbing ------------------------------------------------------------------------

    def _begin(self, now_ms: int) -> None:
        self._out.begin(now_ms)
        if not self._started:
            self._started = True
            self._watch.view_started_ms = now_ms
            self._out.set_timer(TimerId.STATUS, self.config.status_interval_ms)
            self._out.writes.append((keys.KEY_LAYOUT, pack(keys.LAYOUT_VERSION)))
            if not self.active and self._vcs.own is not None:
                self._out.actions.append(Broadcast(wire(self._vcs.own)))
                self._check_view_change_quorum()
            if self._pending_vc is not None:
                self._start_view_change(self._pending_vc)
                self._pending_vc = None
            if self.stable_checkpoint > self.last_delivered_seq:
                self._request_fetch(self.stable_checkpoint, self._stable_digest,
                                    tuple(c.replica for c in self._stable_proof))
            self._try_deliver()

    def _check_sig(self, msg: object) -> bool:
        if self._verifier(msg.replica, msg.body, msg.signature):  # type: ignore[attr-defined]
            return True
        self.stats["bad_signature"] += 1
        return False

    def _may_vote(self, view: int) -> bool:
        return self._floor.allows(view)

    def _in_window(self, seq: int) -> bool:
        return self.stable_checkpoint < seq <= self.high_watermark

    def _slot(self, seq: int) -> Slot:
        slot = self._slots.get(seq)
        if slot is None:
            slot = self._slots[seq] = Slot(seq)
        return slot

    # ---- dispatch ------------------------------------------------------------------------

    def _dispatch(self, sender: str, data: bytes) -> None:
        if sender not in self.config.node_ids or sender == self.node_id:
            self.stats["unknown_sender"] += 1
            return
        msg, batch_bytes = decode_message(data)
        if msg.replica != sender:
            self.stats["wrong_sender"] += 1
            return
        if isinstance(msg, PrePrepare):
            self._on_pre_prepare(msg, batch_bytes)
        elif isinstance(msg, Prepare):
            self._on_prepare(msg)
        elif isinstance(msg, Commit):
            self._on_commit(msg)
        elif isinstance(msg, Checkpoint):
            if self._check_sig(msg):
                self._add_checkpoint(msg)
        elif isinstance(msg, ViewChange):
            self._on_view_change(msg)
        elif isinstance(msg, NewView):
            self._on_new_view(msg)
        elif isinstance(msg, Status):
            self._on_status(msg)
        elif isinstance(msg, Forward):
            if self._check_sig(msg):
                for payload in msg.requests:
                    self._add_request(payload)
        elif isinstance(msg, Committed):
            self._on_committed(msg)
        elif isinstance(msg, CheckpointProof):
            self._on_checkpoint_proof(msg)
        elif isinstance(msg, BatchFetch):
            self._on_batch_fetch(msg)
        elif isinstance(msg, BatchReply):
            self._on_batch_reply(msg)

    # ---- requests and batching (primary) -------------------------------------------------

    def _add_request(self, payload: bytes) -> None:
        if len(payload) > self.config.max_request_bytes or len(payload) > self.config.max_batch_bytes:
            self.stats["request_too_large"] += 1
            return
        reason = self._pool.add(payload, self._out.now, self.is_primary)
        if reason is not None:
            self.stats[reason] += 1
            return
        if self.active and TimerId.REQUEST not in self._out.timers:
            self._out.set_timer(TimerId.REQUEST, self.config.request_timeout_ms)
        if self.is_primary:
            self._proposer.last_arrival_ms = self._out.now
            self._maybe_cut()

    def _batch_timer(self) -> None:
        wait = self._proposer.timer_wait(self._out.now)
        if wait == 0 or not self.is_primary:
            self._proposer.batch_due = True
            self._maybe_cut()
        else:
            self._out.set_timer(TimerId.BATCH, wait)

    def _maybe_cut(self) -> None:
        """Cut batches while the pipeline and watermarks allow (§4.2, §4.3)."""
        if not self.is_primary or not self._may_vote(self.view):
            return
        cfg, pool, prop = self.config, self._pool, self._proposer
        # Never propose at or below what is already committed (we may have caught up by
        # state transfer past our own proposals).
        prop.next_seq = max(prop.next_seq, self.last_delivered_seq + 1)
        while pool.queue and prop.may_cut(len(pool.queue), pool.queue_bytes,
                                          self.last_delivered_seq, self.high_watermark):
            payloads = pool.take_batch(cfg.max_batch_bytes, cfg.max_batch_count)
            if payloads:
                self._propose(payloads)
        if not pool.queue:
            prop.batch_due = False
            self._out.cancel_timer(TimerId.BATCH)
        elif not prop.batch_due and TimerId.BATCH not in self._out.timers:
            prop.queue_since_ms = self._out.now
            self._out.set_timer(TimerId.BATCH, cfg.batch_timeout_ms)

    def _propose(self, payloads: list[bytes]) -> None:
        seq, batch = self._proposer.batch(payloads, self._out.now, self._last_delivered_ts)
        batch_bytes = batch.encode()
        digest = sha256(batch_bytes)
        pp = make_pre_prepare(self.view, seq, digest, self.node_id, self._sign)
        slot = self._slot(seq)
        slot.pre_prepare = pp
        slot.batches[digest] = (batch, batch_bytes)
        self._out.writes.append(keys.pre_prepare_item(pp, batch_bytes))
        self._out.broadcast(pp, batch_bytes)
        self._check_prepared(slot)

    def _request_timeout(self) -> None:
        """§4.4: a request waiting too long means the primary is faulty, slow or censoring
        (the verdict and its reasons: ``watchdog``)."""
        oldest = self._pool.oldest()
        if oldest is None or not self.active:
            return
        verdict = self._watch.check(*oldest, len(self._pool), self._out.now)
        if verdict.overdue and not self.is_primary:
            overdue = self._pool.overdue(self._out.now - self.config.request_timeout_ms, limit=1000)
            if overdue:
                forward = make_forward(tuple(overdue), self.node_id, self._sign)
                self._out.actions.append(Send(self.primary, wire(forward)))
        if verdict.reason is not None:
            self.stats["request_timeout_view_change"] += 1
            self.stats[verdict.reason] += 1
            self._start_view_change(self.view + 1)
            return
        self._out.set_timer(TimerId.REQUEST, verdict.recheck_ms)

    # ---- normal case (§4.2) --------------------------------------------------------------

    def _on_pre_prepare(self, msg: PrePrepare, batch_bytes: bytes | None) -> None:
        slot = self._slots.get(msg.seq)
        why = votes.screen_pre_prepare(msg, slot, view=self.view, active=self.active,
                                       primary=self.primary, in_window=self._in_window(msg.seq),
                                       has_batch=batch_bytes is not None)
        if why == "equivocation":
            if self._check_sig(msg):
                self.stats[why] += 1
            return
        if why is not None:
            self.stats[why] += 1
            if (why == "duplicate" and slot is not None and msg.digest not in slot.batches
                    and batch_bytes is not None):
                self._store_batch(slot, msg.digest, batch_bytes)
            return
        assert batch_bytes is not None  # screened: "missing_batch"
        if not self._check_sig(msg):
            return
        batch = votes.parse_batch(batch_bytes, msg.digest)
        if isinstance(batch, str):
            self.stats[batch] += 1
            return
        if msg.seq > self.last_delivered_seq and not votes.timestamp_ok(
                batch.timestamp_ms, self._last_delivered_ts, self._out.now,
                self.config.max_clock_skew_ms):
            self.stats["bad_timestamp"] += 1
            return
        slot = self._slot(msg.seq)
        slot.batches[msg.digest] = (batch, batch_bytes)
        self._accept_pre_prepare(slot, msg, batch_bytes)
        self._check_prepared(slot)
        self._try_deliver()

    def _accept_pre_prepare(self, slot: Slot, pp: PrePrepare, batch_bytes: bytes | None) -> None:
        """Record ``pp`` durably and send our PREPARE for it (backups only)."""
        slot.pre_prepare = pp
        self._out.writes.append(keys.pre_prepare_item(pp, batch_bytes))
        if pp.replica != self.node_id and self._may_vote(pp.view):
            prepare = make_prepare(pp.view, pp.seq, pp.digest, self.node_id, self._sign)
            slot.prepares[self.node_id] = prepare
            self._out.broadcast(prepare)

    def _on_prepare(self, msg: Prepare) -> None:
        why = votes.screen_prepare(msg, self._slots.get(msg.seq), view=self.view,
                                   primary=self.primary, in_window=self._in_window(msg.seq))
        if why is not None:
            self.stats[why] += 1
            return
        if not self._check_sig(msg):
            return
        slot = self._slot(msg.seq)
        slot.prepares[msg.replica] = msg
        self._check_prepared(slot)

    def _check_prepared(self, slot: Slot) -> None:
        """prepared(m, v, n, i): the pre-prepare plus quorum-1 matching PREPAREs (§4.2)."""
        pp = slot.pre_prepare
        if not self.active or pp is None or pp.view != self.view or slot.commit_sent_view == self.view:
            return
        if not self._may_vote(pp.view):
            return
        cert = votes.prepared_certificate(slot, self.config.quorum)
        if cert is None:
            return
        slot.prepared_cert = cert
        slot.commit_sent_view = self.view
        self._out.writes.append(keys.prepared_item(cert))
        commit = make_commit(pp.view, pp.seq, pp.digest, self.node_id, self._sign)
        self._out.broadcast(commit)
        self._add_commit(slot, commit)

    def _on_commit(self, msg: Commit) -> None:
        why = votes.screen_commit(msg, self._slots.get(msg.seq), view=self.view,
                                  in_window=self._in_window(msg.seq))
        if why is not None:
            self.stats[why] += 1
            return
        if not self._check_sig(msg):
            return
        self._add_commit(self._slot(msg.seq), msg)

    def _add_commit(self, slot: Slot, commit: Commit) -> None:
        """committed-local once a quorum signed COMMIT for one (view, digest) (§4.2)."""
        slot.commits[commit.replica] = commit
        if slot.certificate is not None:
            return
        slot.certificate = votes.commit_certificate(slot, commit.view, commit.digest,
                                                    self.config.quorum)
        if slot.certificate is not None:
            self._try_deliver()

    def _store_batch(self, slot: Slot, digest: bytes, batch_bytes: bytes) -> None:
        batch = votes.parse_batch(batch_bytes, digest)
        if isinstance(batch, str):
            self.stats[batch] += 1
            return
        slot.batches[digest] = (batch, batch_bytes)
        self._try_deliver()

    def _try_deliver(self) -> None:
        """Deliver committed batches in sequence order, each exactly once."""
        if self._fetch.pending is not None:
            return
        delivered = False
        while True:
            seq = self.last_delivered_seq + 1
            slot = self._slots.get(seq)
            if slot is None or slot.certificate is None:
                break
            cert = slot.certificate
            entry = slot.batches.get(cert.digest)
            if entry is None:
                self._ask_batch(slot, cert.digest)
                break
            batch = entry[0]
            self._out.actions.append(Deliver(seq, cert.view, batch, cert.digest, cert))
            self.last_delivered_seq = seq
            self._watch.delivered(len(batch.requests), self._out.now)
            delivered = True
            if not batch.is_null:
                self._last_delivered_ts = max(self._last_delivered_ts, batch.timestamp_ms)
                self._pool.delivered(batch.requests)
        if delivered:
            if not self._pool.pending:
                self._out.cancel_timer(TimerId.REQUEST)
            self._maybe_cut()

    def _ask_batch(self, slot: Slot, digest: bytes) -> None:
        if digest == NULL_DIGEST:
            slot.batches[digest] = (NULL_BATCH, NULL_BATCH_BYTES)
            return
        now = self._out.now
        if slot.fetch_asked_ms >= 0 and now - slot.fetch_asked_ms < self.config.status_interval_ms:
            return
        slot.fetch_asked_ms = now
        self._out.broadcast(make_batch_fetch(slot.seq, digest, self.node_id, self._sign))

    def _allow(self, peer: str, count: int = 1) -> bool:
        if self._budget.allow(peer, self._out.now, count):
            return True
        self.stats["retransmit_budget"] += 1
        return False

    def _on_batch_fetch(self, msg: BatchFetch) -> None:
        slot = self._slots.get(msg.seq)
        entry = slot.batches.get(msg.digest) if slot is not None else None
        if entry is None or not self._check_sig(msg) or not self._allow(msg.replica):
            return
        reply = make_batch_reply(msg.seq, msg.digest, entry[1], self.node_id, self._sign)
        self._out.actions.append(Send(msg.replica, wire(reply)))

    def _on_batch_reply(self, msg: BatchReply) -> None:
        slot = self._slots.get(msg.seq)
        if slot is None or msg.digest in slot.batches:
            return
        if msg.digest not in votes.wanted_digests(slot):
            self.stats["unwanted_batch"] += 1
            return
        if self._check_sig(msg):
            self._store_batch(slot, msg.digest, msg.batch_bytes)

    def _on_committed(self, msg: Committed) -> None:
        """A batch with its commit certificate, sent to us because we fell behind."""
        why = votes.screen_committed(msg, self._slots.get(msg.seq),
                                     last_delivered=self.last_delivered_seq,
                                     in_window=self._in_window(msg.seq))
        if why is not None:
            self.stats[why] += 1
            return
        cert, slot = msg.certificate, self._slot(msg.seq)
        if not self._check_sig(msg):
            return
        if sha256(msg.batch_bytes) != cert.digest or not verify_certificate(
                cert, self.config, self._verifier, cert.digest):
            self.stats["bad_certificate"] += 1
            return
        if slot.certificate is None:
            slot.certificate = cert
        self._store_batch(slot, cert.digest, msg.batch_bytes)
        self._try_deliver()

    # ---- checkpoints and garbage collection (§4.3) ---------------------------------------

    def _own_checkpoint(self, seq: int, state_digest: bytes) -> None:
        if seq % self.config.checkpoint_interval or seq <= self.stable_checkpoint:
            return
        if seq in self._cps.own:
            return
        cp = make_checkpoint(seq, state_digest, self.node_id, self._sign)
        self._cps.own[seq] = cp
        self._out.writes.append(keys.own_checkpoint_item(cp))
        self._out.broadcast(cp)
        self._add_checkpoint(cp)

    def _add_checkpoint(self, cp: Checkpoint) -> None:
        step = self._cps.add(cp, stable_seq=self.stable_checkpoint,
                             high_watermark=self.high_watermark,
                             last_executed=self.last_executed_seq, config=self.config)
        if step.drop is not None:
            self.stats[step.drop] += 1
        elif step.stable is not None:
            self._make_stable(*step.stable)
        elif step.fetch is not None:
            self._request_fetch(*step.fetch)

    def _make_stable(self, seq: int, digest: bytes, proof: tuple[Checkpoint, ...]) -> None:
        """The checkpoint at ``seq`` is stable: truncate the log below it (§4.3)."""
        if seq <= self.stable_checkpoint:
            return
        self.stable_checkpoint = seq
        self._stable_digest = digest
        self._stable_proof = proof
        gone = [s for s in self._slots if s <= seq]
        for s in gone:
            del self._slots[s]
        self._out.writes += keys.stable_items(seq, digest, proof, gone,
                                          self._cps.truncate(seq, self.high_watermark))
        if self._proposer.next_seq <= seq:
            self._proposer.next_seq = seq + 1
        if self.last_delivered_seq < seq:
            self._request_fetch(seq, digest, tuple(c.replica for c in proof))
        self._maybe_cut()

    def _request_fetch(self, target: int, digest: bytes | None, peers: tuple[str, ...]) -> None:
        if target <= self.last_delivered_seq or not self._fetch.ask(target, self._out.now):
            return
        self.stats["fetch_state"] += 1
        peers = tuple(p for p in peers if p != self.node_id)
        self._out.actions.append(FetchState(target, digest, peers))

    def _on_checkpoint_proof(self, msg: CheckpointProof) -> None:
        if msg.seq <= self.stable_checkpoint:
            self.stats["old_checkpoint"] += 1
            return
        if not self._check_sig(msg):
            return
        if not checkpoint_proof_ok(msg.seq, msg.state_digest, msg.checkpoints, self.config,
                                   self._verifier):
            self.stats["bad_checkpoint_proof"] += 1
            return
        if self._cps.diverges(msg.seq, msg.state_digest):
            self.stats["state_divergence"] += 1
            return
        if (msg.seq <= self.last_executed_seq or self._progress.stalled
                or msg.seq > self.high_watermark):
            self._make_stable(msg.seq, msg.state_digest, msg.checkpoints)
        else:
            for cp in msg.checkpoints:
                self._cps.record(cp, self.high_watermark)

    # ---- retransmission ------------------------------------------------------------------

    def _status_tick(self) -> None:
        self._out.set_timer(TimerId.STATUS, self.config.status_interval_ms)
        stalled = self._progress.tick(self.last_delivered_seq)
        self._out.broadcast(make_status(self.view, self.active, self.last_delivered_seq,
                                        self.stable_checkpoint, self.node_id, self._sign))
        if not self.active and self._vcs.own is not None:
            self._out.broadcast(self._vcs.own)
        overdue = self._fetch.overdue(self._out.now)
        if overdue is not None:  # ask anyone this time
            self._request_fetch(overdue, None, self.config.node_ids)
        if stalled:
            slot = self._slots.get(self.last_delivered_seq + 1)
            digest = slot.needed_digest() if slot is not None else None
            if slot is not None and digest is not None and digest not in slot.batches:
                self._ask_batch(slot, digest)

    def _on_status(self, msg: Status) -> None:
        if not self._check_sig(msg):
            return
        if self._floor.learn(msg.replica, msg.view, self.view, self.config.quorum,
                             self.config.weak_quorum):
            self.stats["amnesic_floor_set"] += 1
        stalled = self._progress.peer_stalled(msg.replica, msg.last_delivered)
        to = msg.replica
        behind_view = msg.view < self.view or (msg.view == self.view and not msg.active)
        if self.active and behind_view and self._vcs.new_view is not None and self._allow(to):
            self._out.actions.append(Send(to, wire(self._vcs.new_view)))
        if not stalled or not self._allow(to, 0):
            return
        self._out.actions.extend(retransmit.catch_up(
            msg, slots=self._slots, own_checkpoints=self._cps.own,
            stable_seq=self.stable_checkpoint, stable_digest=self._stable_digest,
            stable_proof=self._stable_proof,
            last_delivered=self.last_delivered_seq, view=self.view, active=self.active,
            node_id=self.node_id, signer=self._sign, allow=lambda: self._allow(to)))

    # ---- view change (§4.4) --------------------------------------------------------------

    def _start_view_change(self, new_view: int) -> None:
        if self._floor.floor is None:
            return  # amnesic and the floor is not known yet: no vote of any kind
        new_view = max(new_view, self._floor.floor + 1)
        if new_view <= self.view:
            return
        self.view = new_view
        self.active = False
        self._pool.stop_primary()
        self._proposer.batch_due = False
        self._out.cancel_timer(TimerId.BATCH)
        self._out.cancel_timer(TimerId.REQUEST)
        self._out.cancel_timer(TimerId.VIEW_CHANGE)
        vc = build_view_change(new_view, self._slots, self.stable_checkpoint, self._stable_digest,
                               self._stable_proof, self.node_id, self._sign)
        self._out.writes += keys.view_change_items(vc)
        self._out.broadcast(vc)
        self._vcs.started(vc)
        self.stats["view_change_started"] += 1
        self._check_view_change_quorum()

    def _on_view_change(self, msg: ViewChange) -> None:
        why = self._vcs.screen(msg, self.view, self.active)
        if why is not None:
            self.stats[why] += 1
            return
        self._vcs.by_replica[msg.replica] = msg
        target = self._vcs.join_target(self.view, self.node_id)
        if target is not None:
            self._start_view_change(target)
        self._check_view_change_quorum()

    def _check_view_change_quorum(self) -> None:
        if self.active:
            return
        # §4.5.2: only once a quorum wants this view (or a later one) does its timer run,
        # so a replica that is alone cannot race through views; the timeout doubles per
        # failed attempt.
        if (self._vcs.wanting(self.view) >= self.config.quorum
                and TimerId.VIEW_CHANGE not in self._out.timers):
            self._out.set_timer(TimerId.VIEW_CHANGE, self._vcs.timeout_ms())
        same = self._vcs.for_view(self.view)
        own = self._vcs.own
        if len(same) >= self.config.quorum and self.primary == self.node_id and own is not None:
            nv, base, reissue = build_new_view(self.view, own, same, self.config.quorum,
                                               self.node_id, self._sign)
            self._out.broadcast(nv)
            self._enter_new_view(nv, base, reissue)

    def _on_new_view(self, msg: NewView) -> None:
        if msg.view < self.view or (msg.view == self.view and self.active):
            self.stats["old_new_view"] += 1
            return
        checked = new_view_ok(msg, self.config, self._verifier, self._vcs.verified)
        if checked is None:
            self.stats["bad_new_view"] += 1
            return
        self._enter_new_view(msg, *checked)

    def _enter_new_view(self, nv: NewView, base: ViewChange,
                        reissue: list[tuple[int, bytes]]) -> None:
        self.view = nv.view
        self.active = True
        self._vcs.entered(nv)
        self._watch.view_started_ms = self._out.now
        self._pool.forwarded.clear()
        self._out.cancel_timer(TimerId.VIEW_CHANGE)
        self._out.writes += keys.new_view_items(nv)
        self.stats["new_view"] += 1
        if base.stable_seq > self.stable_checkpoint:
            self._make_stable(base.stable_seq, base.stable_digest, base.checkpoint_proof)
        max_s = base.stable_seq
        for pp in nv.pre_prepares:
            max_s = max(max_s, pp.seq)
            if not self._in_window(pp.seq):
                continue
            slot = self._slot(pp.seq)
            if pp.digest == NULL_DIGEST:
                slot.batches[NULL_DIGEST] = (NULL_BATCH, NULL_BATCH_BYTES)
            entry = slot.batches.get(pp.digest)
            self._accept_pre_prepare(slot, pp, entry[1] if entry else None)
            if entry is None and pp.seq > self.last_delivered_seq:
                self._ask_batch(slot, pp.digest)
        for seq in sorted(self._slots):
            self._check_prepared(self._slots[seq])
        if self.primary == self.node_id:
            self._proposer.next_seq = max(max_s, self.stable_checkpoint) + 1
            self._pool.become_primary(
                in_flight_requests(self._slots, self.last_delivered_seq, self.view))
            self._proposer.last_ts = newest_timestamp(self._slots, self._proposer.last_ts)
            self._maybe_cut()
        if self._pool.pending:
            self._out.set_timer(TimerId.REQUEST, self.config.request_timeout_ms)
        self._try_deliver()

    # ---- recovery ------------------------------------------------------------------------

    def _restore(self, st: RecoveredState) -> None:
        """Rebuild from persisted state; never vote against what we persisted."""
        self.view, self.active, own_vc, self._pending_vc = st.resume_view()
        self.last_delivered_seq = self.last_executed_seq = st.last_executed_seq
        self.stable_checkpoint = st.stable_seq
        self._stable_digest = st.stable_digest
        self._stable_proof = st.stable_proof
        self._vcs.new_view = st.new_view if st.active else None
        if own_vc is not None:
            self._vcs.own = own_vc
            self._vcs.by_replica[self.node_id] = own_vc
        for seq, cp in st.own_checkpoints.items():
            if seq > self.stable_checkpoint:
                self._cps.own[seq] = cp
                self._cps.record(cp, self.high_watermark)
        self._slots, next_seq = rebuild_slots(
            st, self.stable_checkpoint, self.high_watermark, self.view, self.node_id, self._sign)
        self._proposer.next_seq = max(next_seq, self.last_delivered_seq + 1,
                                      self.stable_checkpoint + 1)
