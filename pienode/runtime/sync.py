"""State transfer: catching up on committed blocks from peers, trusting none of them.

A node that is behind (restarted after a while, or wiped down to ``node.toml`` and
``keys/``) asks every peer for its head, then fetches the missing blocks in ranges from
several peers in parallel. Each block must carry a PBFT commit certificate (2f+1 valid
commit signatures from genesis nodes) over the digest of exactly the batch the block holds;
the node then re-executes the batch itself and commits its own result. A peer can waste
our time but cannot make us install anything the consortium did not commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from pienode.consensus.certificate import decode_certificate, verify_certificate
from pienode.consensus.messages import Batch
from pienode.encoding import pack, sha256, unpack
from pienode.errors import PieError
from pienode.ledger.block import Block
from pienode.net.config import CHANNEL_SYNC

if TYPE_CHECKING:
    from pienode.runtime.driver import ConsensusDriver
    from pienode.runtime.node import Node

log = logging.getLogger("pienode.sync")

POLL_INTERVAL_S = 1.0
RANGE = 64
REQUEST_TIMEOUT_S = 10.0


class StateSync:
    def __init__(self, node: "Node", driver: "ConsensusDriver") -> None:
        self.node = node
        self.driver = driver
        self._wanted = asyncio.Event()
        self._target = 0
        self._asked = False
        self._last_height = -1
        self._installed_ids: list[bytes] = []

    def want(self, target_seq: int, peers: tuple[str, ...] = ()) -> None:
        """The replica is behind (``FetchState``); it waits for ``transferred`` either way."""
        self._target = max(self._target, target_seq)
        self._asked = True
        self._wanted.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wanted.wait(), POLL_INTERVAL_S)
            except asyncio.TimeoutError:
                pass
            self._wanted.clear()
            asked, self._asked = self._asked, False
            try:
                await self._round()
            except PieError as exc:
                log.info("state transfer round failed: %s", exc.message)
            if asked or self._installed_ids:
                head = self.node.ledger.head
                ids, self._installed_ids = self._installed_ids, []
                self.driver.transferred(head.height, head.hash(), ids)

    async def _heads(self) -> dict[str, int]:
        net = self.node.net
        peers = sorted(net.connected_peers())

        async def ask(p: str) -> tuple[str, int]:
            try:
                raw = await net.request(p, CHANNEL_SYNC, pack({"op": "head"}), REQUEST_TIMEOUT_S)
                d = unpack(raw, max_bytes=4096)
                return p, int(d["height"])
            except Exception:  # a dead or lying peer only loses its vote
                return p, -1

        return {p: h for p, h in await asyncio.gather(*(ask(p) for p in peers)) if h >= 0}

    async def _round(self) -> None:
        ours = self.node.ledger.height
        stuck = ours == self._last_height
        self._last_height = ours
        if self.driver.replica.last_delivered_seq > ours:
            # Ordered batches are waiting for execution (a large block takes a while): we
            # are busy, not stuck. Fetching the same blocks from peers would only race the
            # execution loop for the commit lock and redo its work.
            stuck = False
        if not (stuck or self._target > ours):
            return
        heads = await self._heads()
        ahead = {p: h for p, h in heads.items() if h > ours}
        if not ahead:
            return
        target = max(ahead.values())
        log.info("catching up from %d to %d from %s", ours, target, ", ".join(sorted(ahead)))
        await self.catch_up(target, ahead)

    async def catch_up(self, target: int, heads: dict[str, int]) -> None:
        node = self.node
        while node.ledger.height < target:
            start = node.ledger.height + 1
            ranges = []
            peers = sorted(heads, key=lambda p: -heads[p])
            for i, lo in enumerate(range(start, min(target, start + RANGE * max(1, len(peers)) - 1) + 1, RANGE)):
                ranges.append((lo, min(lo + RANGE - 1, target), peers[i % len(peers)]))
            results = await asyncio.gather(*(self._fetch(lo, hi, p, peers) for lo, hi, p in ranges))
            installed = 0
            for blocks in results:
                for raw in blocks:
                    if not await self._install(raw):
                        break
                    installed += 1
                else:
                    continue
                break
            if installed == 0:
                raise PieError("no peer supplied a verifiable next block")

    async def _fetch(self, lo: int, hi: int, first: str, peers: list[str]) -> list[bytes]:
        order = [first] + [p for p in peers if p != first]
        for p in order:
            try:
                raw = await self.node.net.request(p, CHANNEL_SYNC, pack({"op": "blocks", "from": lo, "to": hi}),
                                                  REQUEST_TIMEOUT_S)
                out = unpack(raw)
                if isinstance(out, list) and out:
                    return [b for b in out if isinstance(b, bytes)]
            except Exception as exc:
                log.info("block fetch %d-%d from %s failed: %s", lo, hi, p, type(exc).__name__)
        return []

    async def _install(self, raw: bytes) -> bool:
        node = self.node
        try:
            block = Block.decode(raw)
        except PieError:
            return False
        async with node.commit_lock:
            if block.height <= node.ledger.height:
                return True
            if block.height != node.ledger.height + 1:
                return False
            try:
                cert = decode_certificate(block.certificate)
            except Exception:
                return False
            batch = Batch(timestamp_ms=block.header.timestamp_ms, requests=tuple(block.txs))
            digest = sha256(batch.encode())
            if digest != block.header.batch_digest or cert.seq != block.height or cert.digest != digest:
                log.warning("block %d from a peer does not match its certificate", block.height)
                return False
            if not verify_certificate(cert, self.driver.config, self.driver.verifier, digest):
                log.warning("block %d carries an invalid commit certificate", block.height)
                return False
            start = time.monotonic()
            mine = await self.driver.execute_and_commit(block.height, batch, digest, block.certificate)
        if mine.hash() != block.hash():
            log.warning("block %d re-executed to a different hash than the peer's copy", block.height)
        node.metrics.state_transfers.inc()
        node.on_block_committed(mine, "state_transfer")
        self._installed_ids.extend(sha256(t) for t in mine.txs)
        log.debug("installed block %d in %.1f ms", mine.height, (time.monotonic() - start) * 1000)
        return True
