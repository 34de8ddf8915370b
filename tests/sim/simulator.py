"""Deterministic simulation of a PBFT replica group (the harness, not a test).

A virtual clock and one seeded RNG drive everything: a network that drops, delays,
duplicates, reorders, replays and partitions; crashes at any point of an action list (a
replica's Persist may land while the sends after it are lost) and restarts from the
persisted items; Byzantine replicas. Every message crosses the real codec as bytes.
Delivered batches are executed into a hash chain; FetchState is answered by copying
certified blocks from peers after checking their commit certificates.

Safety is checked on every delivery; ``run`` returns once every honest replica executed
every submitted request, or raises ``SimFailure``.
"""

from __future__ import annotations

import hashlib
import hmac
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from pienode.consensus import (
    Broadcast, CancelTimer, Deliver, FetchState, Persist, RecoveredState, Replica, ReplicaConfig,
    Send, SetTimer, TimerId, verify_certificate,
)
from pienode.consensus.decoding import decode_message
from pienode.consensus.messages import (
    Forward, PrePrepare, make_commit, make_pre_prepare, make_prepare, wire, Batch,
)
from pienode.crypto.keys import PrivateKey
from pienode.encoding import pack, sha256

GENESIS = bytes(32)


class SimFailure(AssertionError):
    pass


@dataclass
class Scenario:
    n: int = 4
    requests: int = 20
    submit_until_ms: int = 3000
    chaos_until_ms: int = 4000
    drop: float = 0.0
    duplicate: float = 0.0
    replay: float = 0.0
    max_delay_ms: int = 20
    partitions: int = 0
    crashes: int = 0
    byzantine: dict[str, str] = field(default_factory=dict)  # node -> behaviour
    liveness_budget_ms: int = 60_000
    #: Execution lags delivery by up to this much (the runtime executes in another task).
    exec_delay_ms: int = 0
    #: Like the runtime's sync task: a node whose height is stuck copies certified blocks
    #: from peers on its own, without a FetchState, and reports it.
    autosync: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def random(cls, rng: random.Random) -> "Scenario":
        n = rng.choice([4, 4, 4, 4, 5, 7])
        f = (n - 1) // 3
        sc = cls(n=n, requests=rng.randint(5, 30))
        sc.drop = rng.choice([0.0, 0.02, 0.1, 0.25])
        sc.duplicate = rng.choice([0.0, 0.05, 0.2])
        sc.replay = rng.choice([0.0, 0.02, 0.1])
        sc.max_delay_ms = rng.choice([2, 20, 80])
        sc.partitions = rng.choice([0, 0, 1, 2])
        nbyz = rng.choice([0, 0, 1, f]) if f else 0
        ids = [f"r{i}" for i in range(n)]
        for node in rng.sample(ids, nbyz):
            sc.byzantine[node] = rng.choice(["silent", "equivocate", "forger", "liar"])
        sc.crashes = rng.choice([0, 0, 1, 3]) if f - nbyz > 0 or not nbyz else 0
        sc.config = {
            "checkpoint_interval": rng.choice([2, 4, 8]),
            "max_batch_count": rng.choice([1, 3, 50]),
            "max_inflight_batches": rng.choice([1, 4, 16]),
        }
        return sc


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


class Node:
    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.replica: Replica | None = None
        self.kv: dict[bytes, bytes] = {}
        self.ledger: list[tuple[Batch, bytes, Any]] = []  # (batch, digest, certificate)
        self.states: list[bytes] = [GENESIS]
        self.timer_gen: dict[TimerId, int] = {}
        self.received: list[bytes] = []
        self.doomed = False
        self.exec_queue: list[Deliver] = []
        self.exec_scheduled = False
        self.expect = 1  # next seq the replica may deliver
        self.synced_height = -1


class Sim:
    def __init__(self, seed: int, scenario: Scenario | None = None, *,
                 late_faults: bool = True, real_keys: bool = False) -> None:
        """``late_faults=False`` leaves out the faults added after the first regression
        seeds were recorded (lagging execution, unsolicited sync), so those seeds replay
        the exact scenario they failed in."""
        self.seed = seed
        self.rng = random.Random(seed)
        self.sc = scenario or Scenario.random(self.rng)
        # Faults added later draw from their own stream, so the scenarios (and regression
        # seeds) of the main stream stay what they were.
        self.rng2 = random.Random(seed * 7919 + 1)
        if scenario is None and late_faults:
            self.sc.exec_delay_ms = self.rng2.choice([0, 0, 5, 40])
            self.sc.autosync = self.rng2.random() < 0.3
            for node_id in sorted(self.sc.byzantine):
                if self.rng2.random() < 0.25:
                    self.sc.byzantine[node_id] = "censor"
        self.ids = tuple(f"r{i}" for i in range(self.sc.n))
        cfg = dict(checkpoint_interval=4, batch_timeout_ms=5, view_change_timeout_ms=400,
                   request_timeout_ms=400, status_interval_ms=150, fetch_retry_ms=1000)
        cfg.update(self.sc.config)
        cfg.setdefault("watermark_window", 2 * cfg["checkpoint_interval"])
        self.config = ReplicaConfig(node_ids=self.ids, **cfg)
        self.secrets = {i: sha256(f"{seed}/{i}".encode()) for i in self.ids}
        self.keys = {i: PrivateKey(self.secrets[i]) for i in self.ids} if real_keys else None
        self.nodes = {i: Node(i) for i in self.ids}
        self.honest = [i for i in self.ids if i not in self.sc.byzantine]
        self.now = 0
        self._events: list[tuple[int, int, str, tuple[Any, ...]]] = []
        self._counter = 0
        self.partition: set[str] | None = None
        self.committed: dict[int, bytes] = {}
        self.submitted: list[bytes] = []
        self.history: list[tuple[str, str, bytes]] = []
        self.steps = 0
        self.messages = 0

    # ---- crypto (HMAC stands in for signatures: unforgeable without the secret) ----------

    def signer(self, node_id: str):
        if self.keys is not None:
            key = self.keys[node_id]
            return lambda body: key.sign("pbft", body)
        secret = self.secrets[node_id]
        return lambda body: _mac(secret, body)

    def verifier(self, node_id: str, body: bytes, sig: bytes) -> bool:
        if self.keys is not None:
            key = self.keys.get(node_id)
            return key is not None and key.public_key.verify("pbft", body, sig)
        secret = self.secrets.get(node_id)
        return secret is not None and hmac.compare_digest(_mac(secret, body), sig)

    # ---- event queue -----------------------------------------------------------------------

    def schedule(self, at: int, kind: str, *args: Any) -> None:
        self._counter += 1
        heapq.heappush(self._events, (at, self._counter, kind, args))

    def chaos(self) -> bool:
        return self.now < self.sc.chaos_until_ms

    # ---- network ---------------------------------------------------------------------------

    def censored(self, node_id: str, payload: bytes) -> bool:
        """A censoring replica never batches a quarter of the requests."""
        return self.sc.byzantine.get(node_id) == "censor" and sha256(payload)[0] < 64

    def send(self, src: str, dst: str, data: bytes) -> None:
        if src in self.sc.byzantine and self.sc.byzantine[src] == "silent":
            return
        if self.sc.byzantine.get(dst) == "censor" and isinstance(decode_message(data)[0], Forward):
            return
        self.messages += 1
        if self.chaos():
            if self.partition is not None and ((src in self.partition) != (dst in self.partition)):
                return
            if self.rng.random() < self.sc.drop:
                return
            copies = 2 if self.rng.random() < self.sc.duplicate else 1
            if len(self.history) < 2000:
                self.history.append((src, dst, data))
        else:
            copies = 1
        for _ in range(copies):
            delay = self.rng.randint(1, self.sc.max_delay_ms if self.chaos() else 5)
            self.schedule(self.now + delay, "msg", dst, src, data)

    def broadcast(self, src: str, data: bytes) -> None:
        if self.sc.byzantine.get(src) == "equivocate":
            self._equivocate(src, data)
            return
        for dst in self.ids:
            if dst != src:
                self.send(src, dst, data)

    def _equivocate(self, src: str, data: bytes) -> None:
        msg, batch_bytes = decode_message(data)
        if not isinstance(msg, PrePrepare) or batch_bytes is None:
            for dst in self.ids:
                if dst != src:
                    self.send(src, dst, data)
            return
        from pienode.consensus.messages import decode_batch

        batch = decode_batch(batch_bytes)
        other = Batch(batch.timestamp_ms + 1, tuple(reversed(batch.requests)) + (b"evil",))
        ob = other.encode()
        alt = make_pre_prepare(msg.view, msg.seq, sha256(ob), src, self.signer(src))
        for k, dst in enumerate(d for d in self.ids if d != src):
            self.send(src, dst, data if k % 2 == 0 else wire(alt, ob))

    # ---- carrying out actions ----------------------------------------------------------------

    def process(self, node: Node, actions: list[Any]) -> None:
        work = list(actions)
        if node.doomed and work:
            work = work[: self.rng.randint(0, len(work))]
            self._run_actions(node, work)
            self.crash(node)
            return
        self._run_actions(node, work)

    def _run_actions(self, node: Node, work: list[Any]) -> None:
        i = 0
        while i < len(work):
            a = work[i]
            i += 1
            if node.replica is None:
                return
            if isinstance(a, Persist):
                for k, v in a.items:
                    if v is None:
                        node.kv.pop(k, None)
                    else:
                        node.kv[k] = v
            elif isinstance(a, Send):
                self.send(node.id, a.to, a.data)
            elif isinstance(a, Broadcast):
                self.broadcast(node.id, a.data)
            elif isinstance(a, SetTimer):
                gen = node.timer_gen.get(a.timer, 0) + 1
                node.timer_gen[a.timer] = gen
                self.schedule(self.now + a.delay_ms, "timer", node.id, a.timer, gen)
            elif isinstance(a, CancelTimer):
                node.timer_gen[a.timer] = node.timer_gen.get(a.timer, 0) + 1
            elif isinstance(a, Deliver):
                self._check_delivery(node, a)
                if self.sc.exec_delay_ms == 0:
                    self._execute(node, a.seq, a.batch, a.digest, a.certificate)
                    work[i:i] = node.replica.on_executed(a.seq, node.states[-1], self.now)
                else:
                    node.exec_queue.append(a)
                    if not node.exec_scheduled:
                        node.exec_scheduled = True
                        self.schedule(self.now + self.rng2.randint(0, self.sc.exec_delay_ms),
                                      "exec", node.id)
            elif isinstance(a, FetchState):
                self.schedule(self.now + self.rng.randint(1, 30), "fetch", node.id, a.target_seq,
                              a.peers)

    def _check_delivery(self, node: Node, d: Deliver) -> None:
        if d.seq != node.expect:
            raise SimFailure(f"seed {self.seed}: {node.id} delivered seq {d.seq}, expected {node.expect}")
        node.expect = d.seq + 1

    def _run_executor(self, node: Node) -> None:
        """The runtime's execute task: in order; skips what state transfer installed."""
        node.exec_scheduled = False
        queue, node.exec_queue = node.exec_queue, []
        for d in queue:
            if node.replica is None:
                return
            if d.seq <= len(node.ledger):
                if node.ledger[d.seq - 1][1] != d.digest:
                    raise SimFailure(f"seed {self.seed}: {node.id} delivered {d.seq} unlike its ledger")
                continue
            self._execute(node, d.seq, d.batch, d.digest, d.certificate)
            self.process(node, node.replica.on_executed(d.seq, node.states[-1], self.now))

    def _autosync(self, node: Node) -> None:
        self.schedule(self.now + 1000, "autosync", node.id)
        height = len(node.ledger)
        stuck, node.synced_height = height == node.synced_height, height
        best = max(len(self.nodes[p].ledger) for p in self.ids)
        if node.replica is not None and stuck and best > height:
            self.fetch(node, best, ())

    def _execute(self, node: Node, seq: int, batch: Batch, digest: bytes, cert: Any) -> None:
        if seq != len(node.ledger) + 1:
            raise SimFailure(f"seed {self.seed}: {node.id} executes seq {seq} at height {len(node.ledger)}")
        if not verify_certificate(cert, self.config, self.verifier, digest) or cert.seq != seq:
            raise SimFailure(f"seed {self.seed}: {node.id} delivered seq {seq} with a bad certificate")
        if sha256(batch.encode()) != digest:
            raise SimFailure(f"seed {self.seed}: {node.id} delivered a batch not matching its digest")
        if node.id not in self.sc.byzantine:
            known = self.committed.setdefault(seq, digest)
            if known != digest:
                raise SimFailure(f"seed {self.seed}: SAFETY: {node.id} delivered another digest at {seq}")
        node.ledger.append((batch, digest, cert))
        node.states.append(sha256(node.states[-1] + digest))

    # ---- faults ------------------------------------------------------------------------------

    def crash(self, node: Node) -> None:
        node.replica = None
        node.doomed = False
        node.exec_queue = []  # in memory only: delivered but not yet executed is lost
        node.timer_gen = {k: v + 1 for k, v in node.timer_gen.items()}

    def restart(self, node: Node, wipe: bool = False) -> None:
        if node.replica is not None:
            return
        if wipe:
            # Home wiped down to config and keys: consensus store and ledger are gone.
            node.kv.clear()
            node.ledger.clear()
            node.states = [GENESIS]
        node.expect = len(node.ledger) + 1
        st = RecoveredState.from_items(sorted(node.kv.items()), len(node.ledger), node.states[-1])
        node.replica = self._new_replica(node.id, st, amnesic=wipe)
        self.process(node, node.replica.start(self.now))
        done = {p for b, _, _ in node.ledger for p in b.requests}
        for payload in node.received:
            if payload not in done and node.replica is not None:
                self.process(node, node.replica.submit(payload, self.now))

    def _new_replica(self, node_id: str, st: RecoveredState | None = None,
                     amnesic: bool = False) -> Replica:
        return Replica(self.config, node_id, self.signer(node_id), self.verifier, restored=st,
                       amnesic=amnesic)

    def fetch(self, node: Node, target: int, peers: tuple[str, ...]) -> None:
        """State transfer: copy certified blocks, verifying each; never trust one peer."""
        if node.replica is None:
            return
        order = list(peers) + [p for p in self.ids if p not in peers and p != node.id]
        ids: list[bytes] = []
        while len(node.ledger) < target:
            seq = len(node.ledger) + 1
            got = False
            for peer in order:
                pl = self.nodes[peer].ledger
                if len(pl) < seq:
                    continue
                batch, digest, cert = pl[seq - 1]
                if self.sc.byzantine.get(peer) == "liar":
                    batch = Batch(batch.timestamp_ms + 7, batch.requests + (b"lie",))
                if cert.seq != seq or sha256(batch.encode()) != cert.digest or not verify_certificate(
                        cert, self.config, self.verifier, cert.digest):
                    continue
                self._execute(node, seq, batch, cert.digest, cert)
                ids.extend(sha256(p) for p in batch.requests)
                got = True
                break
            if not got:
                break
        node.expect = max(node.expect, len(node.ledger) + 1)
        self.process(node, node.replica.on_state_transferred(len(node.ledger), node.states[-1],
                                                             self.now, ids))

    def _forger(self, node_id: str) -> None:
        """A Byzantine replica sending garbage, forged, and well-signed bogus votes."""
        rng = self.rng
        victim = rng.choice([i for i in self.ids if i != node_id])
        r = self.nodes[node_id].replica
        seq = (r.last_delivered_seq if r else 0) + rng.randint(1, 3)
        view = r.view if r else 0
        choice = rng.randint(0, 6)
        if choice == 0:
            data = rng.randbytes(rng.randint(0, 64))
        elif choice == 1:  # forged: claims another id, signature made with our key
            data = wire(make_commit(view, seq, rng.randbytes(32), victim, self.signer(node_id)))
        elif choice == 2:
            data = wire(make_prepare(view, seq, rng.randbytes(32), node_id, self.signer(node_id)))
        elif choice == 3:
            data = wire(make_commit(view, seq, rng.randbytes(32), node_id, self.signer(node_id)))
        elif choice == 4:
            data = wire(make_pre_prepare(view, seq, rng.randbytes(32), node_id, self.signer(node_id)),
                        b"\x92\x01\x90")
        elif choice == 5:  # our own id, a signature that is not ours
            good = make_commit(view, seq, rng.randbytes(32), node_id, self.signer(node_id))
            data = pack([good.body, rng.randbytes(32)])
        else:  # spoofed link: the message claims and arrives as another replica, bad signature
            good = make_prepare(view, seq, rng.randbytes(32), victim, self.signer(node_id))
            for dst in self.ids:
                if dst != victim:
                    self.schedule(self.now + rng.randint(1, 10), "msg", dst, victim, wire(good))
            return
        for dst in self.ids:
            if dst != node_id:
                self.schedule(self.now + rng.randint(1, 10), "msg", dst, node_id, data)

    # ---- run -----------------------------------------------------------------------------------

    def setup(self) -> None:
        sc, rng = self.sc, self.rng
        for i in self.ids:
            node = self.nodes[i]
            node.replica = self._new_replica(i)
            self.process(node, node.replica.start(0))
        for k in range(sc.requests):
            payload = f"tx-{self.seed}-{k}-".encode() + rng.randbytes(rng.randint(1, 40))
            self.schedule(rng.randint(1, sc.submit_until_ms), "submit", payload)
        for _ in range(sc.partitions):
            start = rng.randint(0, sc.chaos_until_ms - 500)
            self.schedule(start, "partition", tuple(rng.sample(self.ids, rng.randint(1, sc.n // 2))))
            self.schedule(start + rng.randint(100, 1500), "heal")
        candidates = [i for i in self.honest]
        t = 0
        for _ in range(sc.crashes):
            t += rng.randint(100, 1200)
            if t >= sc.chaos_until_ms:
                break
            victim = rng.choice(candidates)
            self.schedule(t, "crash", victim)
            down = rng.randint(10, 1500)
            # A wiped node counts as the fault (amnesia), so only without Byzantine nodes.
            wipe = not sc.byzantine and rng.random() < 0.3
            self.schedule(t + down, "restart", victim, wipe)
            t += down  # at most one crashed node at a time
        for node_id, mode in sc.byzantine.items():
            if mode == "forger":
                for _ in range(40):
                    self.schedule(rng.randint(0, sc.chaos_until_ms), "forge", node_id)
        self.schedule(sc.chaos_until_ms, "end_chaos")
        if sc.autosync:
            for i in self.honest:
                self.schedule(self.rng2.randint(0, 1000), "autosync", i)

    def done(self) -> bool:
        if self.now < self.sc.chaos_until_ms:
            return False
        want = set(self.submitted)
        for i in self.honest:
            node = self.nodes[i]
            if node.replica is None:
                return False
            have = {p for b, _, _ in node.ledger for p in b.requests}
            if not want <= have:
                return False
        return True

    def step(self) -> bool:
        if not self._events:
            return False
        at, _, kind, args = heapq.heappop(self._events)
        self.now = max(self.now, at)
        self.steps += 1
        if kind == "msg":
            dst, src, data = args
            node = self.nodes[dst]
            if node.replica is not None:
                self.process(node, node.replica.on_message(src, data, self.now))
        elif kind == "timer":
            node_id, timer, gen = args
            node = self.nodes[node_id]
            if node.replica is not None and node.timer_gen.get(timer) == gen:
                self.process(node, node.replica.on_timeout(timer, self.now))
        elif kind == "submit":
            (payload,) = args
            self.submitted.append(payload)
            for i in self.ids:
                self.schedule(self.now + self.rng.randint(0, 10), "gossip", i, payload)
        elif kind == "gossip":
            node_id, payload = args
            node = self.nodes[node_id]
            if node.replica is not None and not self.censored(node_id, payload):
                node.received.append(payload)
                self.process(node, node.replica.submit(payload, self.now))
            elif node_id in self.honest:
                node.received.append(payload)  # the runtime's mempool gossip catches up later
        elif kind == "fetch":
            node_id, target, peers = args
            self.fetch(self.nodes[node_id], target, peers)
        elif kind == "crash":
            node = self.nodes[args[0]]
            if node.replica is not None:
                if self.rng.random() < 0.5:
                    node.doomed = True  # dies part-way through its next action list
                    self.schedule(self.now + 20, "crash_now", args[0])
                else:
                    self.crash(node)
        elif kind == "crash_now":
            node = self.nodes[args[0]]
            if node.replica is not None and node.doomed:
                self.crash(node)
        elif kind == "restart":
            self.restart(self.nodes[args[0]], args[1])
        elif kind == "partition":
            self.partition = set(args[0])
        elif kind == "heal":
            self.partition = None
        elif kind == "forge":
            self._forger(args[0])
        elif kind == "exec":
            self._run_executor(self.nodes[args[0]])
        elif kind == "autosync":
            self._autosync(self.nodes[args[0]])
        elif kind == "end_chaos":
            self.partition = None
            for i in self.honest:
                self.restart(self.nodes[i])
        if self.chaos() and self.history and self.sc.replay and self.rng.random() < self.sc.replay:
            src, dst, data = self.rng.choice(self.history)
            self.schedule(self.now + self.rng.randint(1, 50), "msg", dst, src, data)
        return True

    def run(self) -> "Sim":
        self.setup()
        deadline = self.sc.chaos_until_ms + self.sc.liveness_budget_ms
        while self.now <= deadline:
            if self.done():
                for i in self.honest:
                    r = self.nodes[i].replica
                    if r is not None and r.stats["state_divergence"]:
                        raise SimFailure(f"seed {self.seed}: {i} saw its state diverge")
                return self
            if not self.step():
                break
        self._liveness_failure()
        return self

    def _liveness_failure(self) -> None:
        lines = [f"seed {self.seed}: LIVENESS: not every honest replica executed every request "
                 f"by t={self.now} ms; scenario={self.sc}"]
        for i in self.ids:
            r = self.nodes[i].replica
            if r is None:
                lines.append(f"  {i}: down")
                continue
            lines.append(f"  {i}: view={r.view} active={r.active} delivered={r.last_delivered_seq} "
                         f"stable={r.stable_checkpoint} pending={r.pending_count} "
                         f"height={len(self.nodes[i].ledger)} stats={dict(r.stats)}")
        raise SimFailure("\n".join(lines))
