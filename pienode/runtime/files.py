"""The node's file service: its ``PackStore``, the peer exchange, and replication policy.

An upload is acknowledged once its blocks are durable here and on enough other hospitals
that f+1 hold it (or ``[files] replication`` hospitals, if set). Those copies are pushed
while the upload streams in (``pienode.files.push``); a hospital whose push failed is
replaced by another that pulls the file after the ingest. The remaining hospitals (all of
them by default, ``file_replication`` in genesis) pull their copies in the background. Any
hospital serves any file, fetching what it lacks from peers and checking each block's hash
before use.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import TYPE_CHECKING

from pienode.errors import FileStoreError
from pienode.files.exchange import BlockExchange, ExchangeConfig
from pienode.files.push import PushReplication
from pienode.files.store import FileInfo, PackStore
from pienode.files.stream import IngestSink
from pienode.ledger import keys
from pienode.net.config import CHANNEL_FILES

if TYPE_CHECKING:
    from pienode.runtime.node import Node

log = logging.getLogger("pienode.files")


#: glibc ``mallopt`` parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_big_buffers_in_the_heap() -> bool:
    """Serve the multi-MiB buffers of file transfers (HTTP pieces, push frames, sealed peer
    frames) from the heap, reused, instead of a fresh ``mmap`` each (every page of which
    faults and is zeroed, then unmapped on free). Measured on a 256 MB upload: the receiving
    node took ~100k page faults. Process-wide, so the node calls it once at start; a no-op
    where glibc's ``mallopt`` is missing. Returns whether it applied."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 16 << 20) and mallopt(_M_TRIM_THRESHOLD, 64 << 20))


class FileService:
    def __init__(self, node: "Node") -> None:
        keep_big_buffers_in_the_heap()
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
        self._pushes = self.exchange.pushes  # closed with the service, whatever serves reads
        self._background: set[asyncio.Task[None]] = set()

    async def handle_peer_request(self, peer: str, payload: bytes) -> bytes:
        return await self.exchange.handle_request(peer, payload)

    async def open_upload(self) -> PushReplication | None:
        """The push of a new upload to the acknowledging hospitals: the first ``ack_peers``
        linked peers in id order (the same ones every time, so a re-upload dedups)."""
        if not self.ack_peers:
            return None
        peers = [p for p in sorted(self.node.net.connected_peers()) if p != self.node.node_id]
        return self.exchange.push_to(peers[: self.ack_peers]) if peers else None

    async def acknowledge(self, info: FileInfo, sink: IngestSink | None) -> None:
        """Return only once f+1 hospitals (by default) hold the file durably: the pushed
        copies that committed, and pulled ones from other hospitals for any that failed."""
        confirmed = list(sink.confirmed) if isinstance(sink, PushReplication) else []
        if isinstance(sink, PushReplication):
            log.info("upload %s (%d bytes) pushed to %s: waited %.2f s for the peers, their commit "
                     "%.2f s%s", info.cid, info.size, ",".join(confirmed) or "nobody", sink.waited_s,
                     sink.commit_s, f"; failed: {sink.failed}" if sink.failed else "")
        await self._acknowledge(info, confirmed)

    async def on_ingested(self, info: FileInfo) -> None:
        """Acknowledge only once f+1 hospitals (by default) hold the file durably (pull)."""
        await self._acknowledge(info, [])

    async def _acknowledge(self, info: FileInfo, confirmed: list[str]) -> None:
        short = self.ack_peers - len(confirmed)
        if short > 0:
            result = await self.exchange.replicate(info, short, exclude=confirmed)
            confirmed += result.confirmed
            if len(confirmed) < self.ack_peers:
                raise FileStoreError(
                    f"stored here, but only {len(confirmed)} of the {self.ack_peers} other hospitals "
                    f"needed confirmed a copy; retry the upload",
                )
        if self.background_peers > len(confirmed):
            task = asyncio.create_task(self._replicate_rest(info, tuple(confirmed)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replicate_rest(self, info: FileInfo, holders: tuple[str, ...]) -> None:
        result = await self.exchange.replicate(info, self.background_peers - len(holders), exclude=holders,
                                               bulk=True)
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
        await self._pushes.close()
        self.store.close()
