"""The node: one OS process per hospital, wiring every subsystem around one event loop.

Ownership (STYLE.md): one task (``ConsensusDriver``) owns the PBFT replica and carries out its
actions in order: persist, then send. One task executes committed batches in order and
commits each block in one synced write. If either task dies, the node stops with a non-zero
exit instead of limping on. HTTP handlers only admit transactions and read committed data.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pienode.crypto.keys import PrivateKey, PublicKey
from pienode.crypto.pre import PreSecretKey
from pienode.encoding import pack, unpack
from pienode.errors import PieError, ReplayError, ValidationError
from pienode.identity.certs import UserCert
from pienode.identity.consortium import engine_fingerprint
from pienode.identity.genesis import Genesis
from pienode.identity.registry import put_identity
from pienode.identity.reqsig import RequestVerifier
from pienode.ledger import keys as ledger_keys
from pienode.ledger.block import Receipt
from pienode.ledger.contracts import ContractHost
from pienode.ledger.executor import Executor
from pienode.ledger.state import StateOverlay
from pienode.ledger.store import Ledger
from pienode.ledger.tx import Transaction
from pienode.ledger.validation import TxCaches, check_transaction
from pienode.runtime.config import NodeConfig
from pienode.runtime.driver import ConsensusDriver
from pienode.runtime.files import FileService
from pienode.runtime.mempool import Mempool
from pienode.runtime.metrics import NodeMetrics
from pienode.runtime.peers import start_network
from pienode.storage.cache import CachedKV
from pienode.storage.kv import open_kv

log = logging.getLogger("pienode.node")

ROLE_PREFIX = {"patient": "pat", "physician": "phy", "researcher": "res", "insurer": "ins"}
RECENT_RECEIPTS = 200_000
#: Peer channel for transaction gossip (net reserves 0-2 for consensus, sync and files).
CHANNEL_MEMPOOL = 3


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _expire(fut: "asyncio.Future[Any]") -> None:
    if not fut.done():
        fut.set_result(None)


def load_secret(path: Path) -> PrivateKey:
    try:
        return PrivateKey.from_bytes(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        raise PieError(f"missing key file {path}") from None
    except ValueError:
        raise PieError(f"key file {path} is not a hex secret") from None


class Node:
    """A hospital node. ``await start()``, then ``await wait_closed()``."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.genesis = Genesis.load(cfg.genesis_path)
        if not self.genesis.has_node(cfg.node_id):
            raise PieError(f"{cfg.node_id} is not a node of this consortium's genesis")
        if self.genesis.engine:
            mine = engine_fingerprint()
            if mine != self.genesis.engine:
                raise PieError(f"this node's contract engine {mine} differs from the consortium's "
                               f"{self.genesis.engine}: contracts would not answer alike; install the pinned Python")
        self.key = load_secret(cfg.keys_dir / "node.key")
        if self.key.public_key.data != self.genesis.node(cfg.node_id).sign_key:
            raise PieError("keys/node.key does not match this node's certificate in genesis")
        self.node_id = cfg.node_id
        self.enc_key = PreSecretKey.from_bytes(load_secret(cfg.keys_dir / "enc.key").to_bytes())
        if self.enc_key.public_key.to_bytes() != self.genesis.node(cfg.node_id).enc_key:
            raise PieError("keys/enc.key does not match this node's certificate in genesis")
        self.metrics = NodeMetrics()
        # World state reads (certificates, "already committed?") are served from a cache
        # that every ledger write keeps current (storage/cache.py).
        self.kv = CachedKV(open_kv(cfg.data_dir / "ledger"), ledger_keys.STATE)
        self.tx_caches = TxCaches()
        self.contracts = ContractHost(workers=2)
        self.executor = Executor(self.genesis, self.kv, contracts=self.contracts, caches=self.tx_caches)
        self.ledger = Ledger(self.kv, self.genesis, self.executor)
        self.mempool = Mempool()
        # Read when scraped, not set on every admission and commit (a hot path).
        self.metrics.mempool.set_function(lambda: len(self.mempool))
        self.request_verifier = RequestVerifier(cfg.node_id)
        self.commit_lock = asyncio.Lock()
        self._height_changed = asyncio.Condition()
        self._gossip_ready = asyncio.Event()
        #: Receipts of recently committed transactions, so a lookup does not decode a block.
        #: Kept encoded: bytes are invisible to the cyclic garbage collector, 200,000 receipt
        #: objects (each with its dicts and tuples) made every full collection walk them.
        self._recent_receipts: OrderedDict[bytes, tuple[int, bytes]] = OrderedDict()
        self.started_at = time.monotonic()
        self._fatal: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._gossip_buf: list[bytes] = []
        self.net: Any = None
        self.driver: Any = None
        self.files: Any = None
        self.metrics.height.set(self.ledger.height)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        self.files = FileService(self)
        await self.contracts.engine.start()  # warm workers before the first call, not during it
        self.net = await start_network(self)
        self.driver = ConsensusDriver(self)
        await self.driver.start()
        self._spawn(self._gossip_loop(), "gossip")
        log.info("node %s started at height %d", self.node_id, self.ledger.height)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.die(f"task {task.get_name()} died: {exc!r}", exc)

    def die(self, why: str, exc: BaseException | None = None) -> None:
        """A broken invariant of our own: stop loudly, never limp on."""
        log.critical("stopping: %s", why, exc_info=exc)
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_exception(SystemExit(3))

    async def wait_closed(self) -> None:
        assert self._fatal is not None
        await self._fatal

    async def stop(self) -> None:
        if self.driver is not None:
            await self.driver.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.net is not None:
            await self.net.stop()
        if self.files is not None:
            await self.files.close()
        await asyncio.to_thread(self.contracts.close)
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(None)
        self.kv.close()

    # -- transactions --------------------------------------------------------------------

    def user_key(self, user_id: str) -> "PublicKey | None":
        """The signing key of a user registered on chain, if any."""
        from pienode.crypto.keys import PublicKey
        from pienode.ledger import keys

        cert = self.ledger.state(keys.user_key(user_id))
        return None if cert is None else PublicKey(cert["sign_key"])

    def contract_status(self, request_id: str) -> dict[str, Any] | None:
        """The re-key request contract's view of a request, as of the committed head."""
        from pienode.execution import Caller
        from pienode.ledger.contracts import read_only_call

        head = self.ledger.head
        out = read_only_call(self.contracts, self.committed_view(), "rekey_request", "status",
                             {"request_id": request_id}, Caller(self.node_id, "node", "low"), head.height,
                             now_ms())
        return out["value"]

    def committed_view(self) -> StateOverlay:
        return StateOverlay(self.kv)

    def admit(self, data: bytes, *, gossip: bool = True) -> bytes:
        """Validate and queue a transaction; returns its id.

        Raises:
            EncodingError, ValidationError, ReplayError, MempoolFull: for the submitter.
        """
        tx_id, fresh = self._admit(data, gossip=gossip)
        if fresh:
            self.metrics.txs_admitted.inc()  # (gossiped ones: once per frame, in on_gossip)
            self.driver.submit(data)
        return tx_id

    def _admit(self, data: bytes, *, gossip: bool, view: StateOverlay | None = None,
               now: int | None = None) -> tuple[bytes, bool]:
        """Validate and add to the mempool: (id, whether it is new there). The caller hands
        new ones to the consensus driver.

        Args:
            view, now: the committed view and clock reading to check against (a gossip frame
                passes one of each for all its transactions, checked without a pause).

        Raises:
            EncodingError, ValidationError, ReplayError, MempoolFull: for the submitter.
        """
        try:
            checked = check_transaction(
                data, genesis=self.genesis, state=view if view is not None else self.committed_view(),
                now_ms=now if now is not None else now_ms(), caches=self.tx_caches
            )
        except PieError as exc:
            self.metrics.txs_refused.labels(type(exc).__name__).inc()
            raise
        if not self.mempool.add(checked.tx_id, data):
            if gossip:
                raise ReplayError("transaction already pending", tx_id=checked.tx_id.hex())
            return checked.tx_id, False
        if gossip:
            self._gossip_buf.append(data)
            self._gossip_ready.set()
        return checked.tx_id, True

    async def wait_committed(self, tx_id: bytes, timeout_s: float) -> tuple[int, Receipt] | None:
        height = self.ledger.tx_height(tx_id)
        if height is not None:
            return height, self.receipt_at(height, tx_id)
        fut = self.mempool.wait(tx_id)  # this caller's own future
        # A timer that resolves that future to None, instead of ``asyncio.wait_for``'s extra
        # waiter future and callbacks: one of these per submitted transaction (issue 3).
        timer = asyncio.get_running_loop().call_later(timeout_s, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            if fut.cancelled() or fut.result() is None:
                self.mempool.forget_waiter(tx_id, fut)

    def receipt_at(self, height: int, tx_id: bytes) -> Receipt:
        hit = self._recent_receipts.get(tx_id)
        if hit is not None and hit[0] == height:
            return Receipt.from_dict(unpack(hit[1]))
        block = self.ledger.block(height)
        assert block is not None
        for r in block.receipts:
            if r.tx_id == tx_id:
                return r
        raise PieError(f"receipt of {tx_id.hex()} missing from block {height}")

    def on_gossip(self, peer: str, payload: bytes) -> None:
        try:
            # Not strict: each transaction is checked on its own; re-encoding the whole frame
            # to prove it canonical would only cost time.
            txs = unpack(payload, max_bytes=self.cfg.peer.max_frame_bytes, strict=False)
            if not isinstance(txs, list):
                raise ValidationError("gossip must be a list")
        except PieError:
            log.warning("discarded malformed gossip from %s", peer)
            return
        fresh: list[bytes] = []
        view, now = self.committed_view(), now_ms()
        for data in txs:
            if not isinstance(data, bytes):
                continue
            try:
                if self._admit(data, gossip=False, view=view, now=now)[1]:
                    fresh.append(data)
            except PieError:
                pass  # already committed, expired or invalid: the primary won't order it from us
        if fresh:
            self.metrics.txs_admitted.inc(len(fresh))
            self.driver.submit_many(fresh)  # one event for the whole frame, in its order

    async def _gossip_loop(self) -> None:
        """Forward admitted transactions to the peers, coalesced: it wakes when something is
        buffered (never on an idle timer) and lets a burst gather for a millisecond."""
        while True:
            await self._gossip_ready.wait()
            await asyncio.sleep(0.001)
            self._gossip_ready.clear()
            if self._gossip_buf:
                buf, self._gossip_buf = self._gossip_buf, []
                self.net.broadcast(CHANNEL_MEMPOOL, pack(buf))

    async def wait_height(self, height: int, timeout_s: float) -> bool:
        """True once the ledger reaches ``height`` (False after ``timeout_s``)."""
        async with self._height_changed:
            try:
                await asyncio.wait_for(self._height_changed.wait_for(lambda: self.ledger.height >= height), timeout_s)
            except asyncio.TimeoutError:
                return False
        return True

    def _notify_height(self) -> None:
        async def notify() -> None:
            async with self._height_changed:
                self._height_changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    def on_block_committed(self, block: Any, source: str) -> None:
        self._notify_height()
        recent = self._recent_receipts
        for r in block.receipts:
            recent[r.tx_id] = (block.height, r.encode())
        while len(recent) > RECENT_RECEIPTS:
            recent.popitem(last=False)
        results: dict[str, int] = {}
        observe = self.metrics.commit_latency.observe
        for r in block.receipts:
            age = self.mempool.committed(r.tx_id, block.height, r)
            if age is not None:
                observe(age)
            code = "ok" if r.ok else r.code
            results[code] = results.get(code, 0) + 1
        for code, n in results.items():  # one labelled increment per result per block
            self.metrics.txs_committed.labels(code).inc(n)
        self.metrics.blocks.labels(source).inc()
        self.metrics.height.set(block.height)

    # -- registration (the hospital acting as the CA of its users) ----------------------

    async def register_user(self, *, role: str, name: str, sign_key: bytes, enc_key: bytes,
                            timeout_s: float = 30.0) -> dict[str, Any]:
        if role not in self.cfg.registration.allowed_roles or role not in self.genesis.role_levels:
            raise ValidationError(f"this hospital does not register {role}s")
        if not name.strip() or len(name) > 200:
            raise ValidationError("name must be 1 to 200 characters")
        user_id = f"{ROLE_PREFIX[role]}-{secrets.token_hex(8)}"
        cert = UserCert(
            user_id=user_id,
            role=role,
            security_level=self.genesis.role_levels[role],
            sign_key=sign_key,
            enc_key=enc_key,
            hospital_id=self.node_id,
            issued_at_ms=now_ms(),
        ).signed_by(self.key)
        cert.check(self.key.public_key)
        # The name stays here, in the hospital's private registry, before anything is sent.
        put_identity(self.kv, user_id, name, role, cert.issued_at_ms)
        tx = Transaction.create(self.key, chain_id=self.genesis.chain_id, kind="register_user",
                                sender=self.node_id, timestamp_ms=now_ms(), body={"cert": cert.to_dict()})
        tx_id = self.admit(tx.encode())
        done = await self.wait_committed(tx_id, timeout_s)
        if done is None:
            raise PieError("registration was not committed in time", tx_id=tx_id.hex())
        height, receipt = done
        if not receipt.ok:
            raise ValidationError(f"registration refused: {receipt.error}")
        return {"user_id": user_id, "cert": cert.to_dict(), "height": height, "tx_id": tx_id.hex()}
