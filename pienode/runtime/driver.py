"""``ConsensusDriver``: the one task that owns the PBFT replica.

It feeds the replica from one queue (client submissions, peer messages, timer expiries,
execution and state-transfer notices) and carries out the returned actions in order. It
drains whatever is queued before acting, so one synced write persists the votes of many
messages before any of them is sent (Castro-Liskov §4.2: a replica logs before it speaks).
Committed batches go to a second task that executes and commits blocks strictly in order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pienode.consensus import actions as A
from pienode.consensus.certificate import encode_certificate
from pienode.consensus.config import ReplicaConfig
from pienode.consensus.replica import RecoveredState, Replica
from pienode.identity.genesis import Genesis
from pienode.ledger import keys
from pienode.ledger.block import Block
from pienode.net.config import CHANNEL_CONSENSUS
from pienode.storage.kv import WriteOps

if TYPE_CHECKING:
    from pienode.runtime.node import Node

log = logging.getLogger("pienode.driver")

PBFT_DOMAIN = "pbft"
#: Most events handled before one persist-then-send round.
DRAIN_LIMIT = 512
#: Header fields that once held the commit certificate's view and its primary. Replicas may
#: commit one batch in different views, so the header carries fixed values; the view lives
#: in the block's certificate.
BLOCK_PROPOSER = "pbft"
BLOCK_VIEW = 0


def replica_config(node: "Node") -> ReplicaConfig:
    return replica_config_for(node.genesis)


def replica_config_for(genesis: Genesis) -> ReplicaConfig:
    p = genesis.params
    return ReplicaConfig(
        node_ids=genesis.node_ids,
        checkpoint_interval=p.checkpoint_interval,
        max_batch_bytes=p.max_block_bytes,
        max_batch_count=p.max_block_txs,
        batch_timeout_ms=p.batch_timeout_ms,
        view_change_timeout_ms=p.view_change_timeout_ms,
        request_timeout_ms=p.request_timeout_ms,
    )


def make_verifier(node: "Node") -> Any:
    return make_verifier_for(node.genesis)


def make_verifier_for(genesis: Genesis) -> Any:
    keys_by_id = {n.node_id: n.public_key for n in genesis.nodes}

    def verify(node_id: str, payload: bytes, signature: bytes) -> bool:
        key = keys_by_id.get(node_id)
        return key is not None and key.verify(PBFT_DOMAIN, payload, signature)

    return verify


class ConsensusDriver:
    def __init__(self, node: "Node") -> None:
        from pienode.runtime.node import now_ms

        self.node = node
        self.now_ms = now_ms
        self.config = replica_config(node)
        self.verifier = make_verifier(node)
        items = list(node.kv.iterate(keys.CONSENSUS))
        head = node.ledger.head
        restored = RecoveredState.from_items(
            [(k[len(keys.CONSENSUS):], v) for k, v in items], head.height, head.hash()
        )
        # A node that has voted before but lost its consensus store (home wiped down to
        # node.toml and keys/) must not vote again until a view it cannot have voted in:
        # it might otherwise sign a second, conflicting vote. The marker lives in keys/,
        # which survives the wipe.
        marker = node.cfg.keys_dir / "consensus-joined"
        amnesic = marker.exists() and not items
        self.replica = Replica(
            self.config,
            node.node_id,
            lambda payload: node.key.sign(PBFT_DOMAIN, payload),
            self.verifier,
            restored=restored,
            amnesic=amnesic,
        )
        if amnesic:
            log.warning("consensus store lost: following without voting until a fresh view (amnesic start)")
        marker.touch()
        self._inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._deliveries: asyncio.Queue[Any] = asyncio.Queue()
        self._timers: dict[Any, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_view = self.replica.view

    async def start(self) -> None:
        self._inbox.put_nowait(("start",))
        self._tasks.append(self.node._spawn(self._run(), "consensus"))
        self._tasks.append(self.node._spawn(self._execute_loop(), "execute"))
        from pienode.runtime.sync import StateSync

        self.sync = StateSync(self.node, self)
        self._tasks.append(self.node._spawn(self.sync.run(), "sync"))

    async def stop(self) -> None:
        for h in self._timers.values():
            h.cancel()

    # -- inputs --------------------------------------------------------------------------

    def submit(self, data: bytes) -> None:
        self._inbox.put_nowait(("submit", data))

    def submit_many(self, datas: list[bytes]) -> None:
        self._inbox.put_nowait(("submit_many", datas))

    def on_peer_message(self, peer: str, data: bytes) -> None:
        self._inbox.put_nowait(("msg", peer, data))

    def executed(self, seq: int, digest: bytes) -> None:
        self._inbox.put_nowait(("executed", seq, digest))

    def transferred(self, seq: int, digest: bytes, request_ids: list[bytes]) -> None:
        self._inbox.put_nowait(("transferred", seq, digest, request_ids))

    # -- the loop ------------------------------------------------------------------------

    def _step(self, event: tuple[Any, ...]) -> list[Any]:
        r, now = self.replica, self.now_ms()
        kind = event[0]
        if kind == "submit":
            return r.submit(event[1], now)
        if kind == "submit_many":
            acts: list[Any] = []
            for data in event[1]:
                acts.extend(r.submit(data, now))
            return acts
        if kind == "msg":
            return r.on_message(event[1], event[2], now)
        if kind == "timeout":
            self._timers.pop(event[1], None)
            return r.on_timeout(event[1], now)
        if kind == "executed":
            return r.on_executed(event[1], event[2], now)
        if kind == "transferred":
            return r.on_state_transferred(event[1], event[2], now, event[3])
        if kind == "start":
            return r.start(now)
        raise AssertionError(f"unknown event {kind}")

    async def _run(self) -> None:
        while True:
            events = [await self._inbox.get()]
            while len(events) < DRAIN_LIMIT and not self._inbox.empty():
                events.append(self._inbox.get_nowait())
            acts: list[Any] = []
            for ev in events:
                acts.extend(self._step(ev))
            await self._carry_out(acts)
            self._observe()

    async def _carry_out(self, acts: list[Any]) -> None:
        ops = WriteOps()
        for a in acts:
            if isinstance(a, A.Persist):
                for k, v in a.items:
                    if v is None:
                        ops.delete(keys.CONSENSUS + k)
                    else:
                        ops.put(keys.CONSENSUS + k, v)
        if len(ops):
            await asyncio.to_thread(self.node.kv.write, ops, sync=True)
        net = self.node.net
        loop = asyncio.get_running_loop()
        for a in acts:
            if isinstance(a, A.Send):
                if a.to == self.node.node_id:
                    self._inbox.put_nowait(("msg", a.to, a.data))
                else:
                    net.send(a.to, CHANNEL_CONSENSUS, a.data)
            elif isinstance(a, A.Broadcast):
                net.broadcast(CHANNEL_CONSENSUS, a.data)
            elif isinstance(a, A.SetTimer):
                old = self._timers.pop(a.timer, None)
                if old is not None:
                    old.cancel()
                self._timers[a.timer] = loop.call_later(
                    a.delay_ms / 1000, self._inbox.put_nowait, ("timeout", a.timer)
                )
            elif isinstance(a, A.CancelTimer):
                old = self._timers.pop(a.timer, None)
                if old is not None:
                    old.cancel()
            elif isinstance(a, A.Deliver):
                self._deliveries.put_nowait(a)
            elif isinstance(a, A.FetchState):
                self.sync.want(a.target_seq, a.peers)

    def _observe(self) -> None:
        m, r = self.node.metrics, self.replica
        if r.view != self._last_view:
            m.view_changes.inc()
            self._last_view = r.view
            log.info("view %d, primary %s", r.view, r.primary)
        m.view.set(r.view)
        m.consensus_discarded.set(sum(r.stats.values()))

    # -- execution -----------------------------------------------------------------------

    async def _execute_loop(self) -> None:
        node = self.node
        while True:
            d = await self._deliveries.get()
            async with node.commit_lock:
                ledger = node.ledger
                if d.seq <= ledger.height:
                    have = ledger.block(d.seq)
                    if have is not None and have.header.batch_digest != d.digest:
                        node.die(f"committed batch {d.seq} differs from the block installed by state transfer")
                    continue
                if d.seq != ledger.height + 1:
                    node.die(f"delivery {d.seq} skips past height {ledger.height}")
                    return
                block = await self.execute_and_commit(d.seq, d.batch, d.digest, encode_certificate(d.certificate))
            node.on_block_committed(block, "consensus")
            self.executed(d.seq, block.hash())

    async def execute_and_commit(self, seq: int, batch: Any, digest: bytes, cert: bytes) -> Block:
        """Execute a certified batch as block ``seq`` and commit it. Caller holds commit_lock.

        The header must be a function of the batch alone: the same batch may commit in view v
        on one replica and, re-proposed by a NEW-VIEW, in view v+1 on another (Castro-Liskov
        §4.4), so the view of this replica's commit certificate (kept in ``cert``) must not
        enter the block hash. Block hashes are also the checkpoint digests: a view-dependent
        header splits the chain and stops checkpoints from ever becoming stable.
        """
        node = self.node

        def run() -> Block:
            block, writes = node.executor.execute(
                node.ledger.head, tuple(batch.requests), timestamp_ms=batch.timestamp_ms,
                proposer=BLOCK_PROPOSER, view=BLOCK_VIEW, batch_digest=digest,
            )
            block = replace(block, certificate=cert)
            node.ledger.commit(block, writes)
            return block

        return await asyncio.to_thread(run)
