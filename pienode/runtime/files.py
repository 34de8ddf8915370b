"""The node's file service: its ``PackStore``, the peer exchange, and replication policy.

An upload is acknowledged once its blocks are durable here and on enough other hospitals
that f+1 hold it (or ``[files] replication`` hospitals, if set); the remaining hospitals
(all of them by default, ``file_replication`` in genesis) pull their copies in the
background. Any hospital serves any file, fetching what it lacks from peers and checking
each block's hash before use.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pienode.errors import FileStoreError
from pienode.files.exchange import BlockExchange, ExchangeConfig
from pienode.files.store import FileInfo, PackStore
from pienode.ledger import keys
from pienode.net.config import CHANNEL_FILES

if TYPE_CHECKING:
    from pienode.runtime.node import Node

log = logging.getLogger("pienode.files")


class FileService:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.store = PackStore(node.cfg.data_dir / "files")
        n = len(node.genesis.nodes)
        holders = node.genesis.params.file_replication or n
        self.background_peers = max(0, min(holders, n) - 1)
        wanted = node.cfg.files.replication or (node.genesis.f + 1)
        self.ack_peers = max(0, min(wanted, n) - 1)

        async def request(peer: str, payload: bytes, timeout: float) -> bytes:
            return await node.net.request(peer, CHANNEL_FILES, payload, timeout)

        self.exchange = BlockExchange(
            self.store,
            request,
            lambda: sorted(node.net.connected_peers()),
            ExchangeConfig(replication=self.ack_peers),
            node_id=node.node_id,
        )
        self._background: set[asyncio.Task[None]] = set()

    async def handle_peer_request(self, peer: str, payload: bytes) -> bytes:
        return await self.exchange.handle_request(peer, payload)

    async def on_ingested(self, info: FileInfo) -> None:
        """Acknowledge only once f+1 hospitals (by default) hold the file durably."""
        if self.ack_peers:
            result = await self.exchange.replicate(info, self.ack_peers)
            if len(result.confirmed) < self.ack_peers:
                raise FileStoreError(
                    f"stored here, but only {len(result.confirmed)} of the {self.ack_peers} other hospitals "
                    f"needed confirmed a copy; retry the upload",
                )
        if self.background_peers > self.ack_peers:
            task = asyncio.create_task(self._replicate_rest(info))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replicate_rest(self, info: FileInfo) -> None:
        result = await self.exchange.replicate(info, self.background_peers)
        if result.failed:
            log.info("background replication of %s: %d confirmed, failed on %s", info.cid,
                     len(result.confirmed), ", ".join(result.failed))

    def referenced_cids(self) -> set[str]:
        """CIDs that committed records point to: never collected."""
        from pienode.encoding import unpack

        out = set()
        for _, raw in self.node.kv.iterate(keys.STATE + b"r/"):
            out.add(unpack(raw)["cid"])
        return out

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.store.close()
