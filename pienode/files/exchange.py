"""Block exchange between hospitals: fetch missing blocks, serve ours, replicate new files.

Owns: the files channel's messages (canonical msgpack, see ``pienode.encoding``):
- ``{"op": "get", "cids": [cid bytes], "bulk"?: true}`` -> ``{"blocks": [bytes | None]}``
  (one entry per asked CID, None for blocks not held or past the response budget). A
  ``bulk`` request (background replication) waits, up to ``bulk_yield``, while this node
  streams an upload of its own: acknowledged uploads go first;
- ``{"op": "has", "cids": [...]}`` -> ``{"have": [bool]}``;
- ``{"op": "replicate", "root": cid bytes, "size": n}`` -> ``{"ok": bool, "error"?: str}``:
  the receiver pulls the whole DAG (from the sender and any other peer) and answers once it
  is durable, so the sender can count the copies before acknowledging an upload;
- push frames, ``push-commit`` and ``push-abort``: an upload streamed to the acknowledging
  hospitals while it is ingested (``pienode.files.push``, which owns their format).

Trust stays simple: every block is verified against its CID before it is used or stored,
whoever sent it, whether asked for (pull) or pushed.

Must never: use or store an unverified block, hold more than a window of leaves of one file
in memory, or let a peer's malformed message raise into the caller (it is answered with an
error or counted as a failure of that peer).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pienode.encoding import pack, unpack
from pienode.errors import FileStoreError, PieError
from pienode.files.cid import CID, DAG_PB
from pienode.files.dagpb import decode_node
from pienode.files.push import PUSH_MAGIC, PushConfig, PushReplication
from pienode.files.push_receiver import PushReceiver
from pienode.files.store import BlockDamaged, BlockMissing, FileInfo, PackStore

log = logging.getLogger(__name__)

CHANNEL_FILES = 2
#: Response budget: stays well under the peer network's 4 MiB frame.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024
MAX_CIDS_PER_REQUEST = 64

#: ``await request(peer_id, payload, timeout) -> answer`` on the files channel.
RequestFn = Callable[[str, bytes, float], Awaitable[bytes]]
PeersFn = Callable[[], Sequence[str]]


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    """Attributes:
    blocks_per_request: CIDs asked of one peer in one request (8 x 256 KiB = 2 MiB). A
        peer answers at most ``MAX_RESPONSE_BYTES`` of blocks and None past that budget,
        which reads as "not held here": more than 12 full blocks per request would send the
        rest to peers that lack them ("block at no reachable peer").
    requests_per_peer: requests in flight to one peer at once.
    window_blocks: leaves of one file fetched before they are written (bounds memory).
    replication: peers asked to hold a copy of each new upload (besides this node).
    timeout: seconds for one block request.
    replicate_timeout: seconds a peer may take to pull a whole file.
    bulk_yield: longest a bulk ``get`` waits for this node's own uploads (under ``timeout``).
    """

    blocks_per_request: int = 8
    requests_per_peer: int = 2
    window_blocks: int = 64
    replication: int = 3
    timeout: float = 30.0
    replicate_timeout: float = 600.0
    push: PushConfig = field(default_factory=PushConfig)
    bulk_yield: float = 20.0


@dataclass(frozen=True, slots=True)
class ReplicationResult:
    root: str
    confirmed: tuple[str, ...]
    failed: tuple[str, ...]


async def handle_request(store: PackStore, payload: bytes) -> bytes:
    """Answer a peer's ``get`` or ``has`` from ``store`` (the serve side without replicate).

    Raises:
        EncodingError / CidError: a malformed request (the caller counts it against the peer).
    """
    msg = unpack(payload)
    if not isinstance(msg, dict) or not isinstance(msg.get("cids"), list):
        raise FileStoreError("malformed files request")
    raw = msg["cids"][:MAX_CIDS_PER_REQUEST]
    cids = [CID.from_bytes(c) if isinstance(c, bytes) else None for c in raw]
    if any(c is None for c in cids):
        raise FileStoreError("malformed CID in files request")
    op = msg.get("op")
    if op == "has":
        have = await asyncio.to_thread(lambda: [store.has(c) for c in cids])  # type: ignore[arg-type]
        return pack({"have": have})
    if op == "get":

        def collect() -> list[bytes | None]:
            out: list[bytes | None] = []
            budget = MAX_RESPONSE_BYTES
            for c in cids:
                assert c is not None
                n = store.block_size(c)
                if n is None or n > budget:
                    out.append(None)
                    continue
                try:
                    out.append(store.get_block(c))
                    budget -= n
                except (BlockMissing, BlockDamaged):
                    out.append(None)  # never serve a damaged copy
            return out

        return pack({"blocks": await asyncio.to_thread(collect)})
    raise FileStoreError("unknown files request op")


class BlockExchange:
    """This node's side of the exchange: a ``BlockSource`` for reads, the files-channel
    handler, and replication of new uploads."""

    def __init__(
        self,
        store: PackStore,
        request: RequestFn,
        peers: PeersFn,
        config: ExchangeConfig | None = None,
        *,
        node_id: str = "",
    ) -> None:
        """Args:
        request: ``await request(peer_id, payload, timeout) -> answer`` on the files channel,
            i.e. ``lambda p, b, t: net.request(p, CHANNEL_FILES, b, t)``; raises on failure.
            Replication requests carry ``replicate_timeout``: the peer answers once it has
            pulled the whole file.
        peers: the peers currently reachable.
        """
        self.store = store
        self._request = request
        self._peers = peers
        self.cfg = config or ExchangeConfig()
        self.node_id = node_id
        self.blocks_fetched = 0
        self.bad_blocks_from_peers = 0
        self.peer_failures = 0
        self.pushes = PushReceiver(store, lambda cids, prefer: self.fetch_blocks(cids, prefer=prefer),
                                   self.cfg.push)
        self._uploads = 0  # uploads this node is pushing right now
        self._quiet = asyncio.Event()
        self._quiet.set()

    # -- serve side -------------------------------------------------------------------

    async def handle_request(self, peer_id: str, payload: bytes) -> bytes:
        """The files-channel request handler to register with the peer network."""
        try:
            if payload[:1] == bytes((PUSH_MAGIC,)):
                return await self.pushes.on_push(peer_id, payload)
            msg = unpack(payload)
            op = msg.get("op") if isinstance(msg, dict) else None
            if op == "replicate":
                root = CID.from_bytes(msg["root"])
                await self.fetch_dag(root, prefer=[peer_id], bulk=msg.get("bulk") is True)
                return pack({"ok": True})
            if op == "push-commit":
                size = msg["size"]
                if not isinstance(size, int) or size < 0 or not isinstance(msg["sid"], bytes):
                    raise FileStoreError("malformed push-commit")
                frame = msg.get("frame")
                if frame is not None and not isinstance(frame, bytes):
                    raise FileStoreError("malformed push-commit")
                return await self.pushes.on_commit(peer_id, msg["sid"], CID.from_bytes(msg["root"]), size,
                                                   frame)
            if op == "push-abort":
                return await self.pushes.on_abort(peer_id, msg["sid"])
            if op == "get" and msg.get("bulk") is True and not self._quiet.is_set():
                try:
                    await asyncio.wait_for(self._quiet.wait(), self.cfg.bulk_yield)
                except TimeoutError:
                    pass  # serve it anyway: background replication must not starve
            return await handle_request(self.store, payload)
        except PieError as exc:
            log.info("files request from %s refused: %s", peer_id, exc.message)
            return pack({"ok": False, "error": exc.message})
        except (KeyError, TypeError) as exc:
            return pack({"ok": False, "error": f"malformed request: {type(exc).__name__}"})

    # -- fetching ---------------------------------------------------------------------

    async def _ask(self, peer: str, cids: list[CID], bulk: bool = False) -> dict[CID, bytes]:
        msg: dict[str, object] = {"op": "get", "cids": [c.to_bytes() for c in cids]}
        if bulk:
            msg["bulk"] = True
        payload = pack(msg)
        try:
            answer = await asyncio.wait_for(
                self._request(peer, payload, self.cfg.timeout), self.cfg.timeout + 1.0
            )
            # Not strict: every block is checked against its CID below, so re-encoding the
            # answer to prove it canonical would only add two passes over every byte.
            blocks = unpack(answer, strict=False)["blocks"]
            if not isinstance(blocks, list) or len(blocks) != len(cids):
                raise FileStoreError("malformed get answer")
        except (PieError, OSError, asyncio.TimeoutError, KeyError, TypeError) as exc:
            self.peer_failures += 1
            log.info("block request to %s failed: %s", peer, type(exc).__name__)
            return {}
        got: dict[CID, bytes] = {}

        def verify() -> None:
            for cid, data in zip(cids, blocks):
                if isinstance(data, bytes):
                    if cid.matches(data):
                        got[cid] = data
                    else:
                        self.bad_blocks_from_peers += 1

        await asyncio.to_thread(verify)
        return got

    async def fetch_blocks(self, cids: list[CID], *, prefer: Sequence[str] = (),
                           bulk: bool = False) -> dict[CID, bytes]:
        """Fetch ``cids`` from peers in parallel, each block verified; a block one peer lacks
        or sends damaged is asked of the next. ``bulk``: background work, which peers busy
        with uploads of their own answer later. Returns what was found."""
        first = [p for p in dict.fromkeys(prefer) if p != self.node_id]
        rest = [p for p in dict.fromkeys(self._peers()) if p != self.node_id and p not in first]
        random.shuffle(rest)  # spread load; the preferred peers (who have it) go first
        peers = first + rest
        found: dict[CID, bytes] = {}
        wanted = list(dict.fromkeys(cids))
        tried: dict[CID, set[str]] = {c: set() for c in wanted}
        sems = {p: asyncio.Semaphore(self.cfg.requests_per_peer) for p in peers}
        while True:
            todo = [c for c in wanted if c not in found and len(tried[c]) < len(peers)]
            if not todo:
                return found
            # Spread the remaining CIDs over the peers each has not been asked of yet.
            plan: dict[str, list[CID]] = {}
            for i, c in enumerate(todo):
                choices = [p for p in peers if p not in tried[c]]
                peer = choices[(i // self.cfg.blocks_per_request) % len(choices)]
                tried[c].add(peer)
                plan.setdefault(peer, []).append(c)

            async def run(peer: str, group: list[CID]) -> None:
                async with sems[peer]:
                    found.update(await self._ask(peer, group, bulk))

            step = self.cfg.blocks_per_request
            await asyncio.gather(
                *(run(p, g[i : i + step]) for p, g in plan.items() for i in range(0, len(g), step))
            )
            self.blocks_fetched += sum(1 for c in todo if c in found)

    async def fetch_dag(self, root: CID, *, prefer: Sequence[str] = (), bulk: bool = False) -> int:
        """Make the whole DAG of ``root`` durable here (fetching what is missing, as ``bulk``
        background work if so), then record it as a root. Returns the file size.

        Raises:
            BlockMissing: some block is at no reachable peer.
        """
        store = self.store
        store.protect(root)
        try:
            level = [root]
            size = -1
            # Two windows in flight: the next one's network fetch overlaps this one's disk
            # write (memory stays bounded by two windows of leaves).
            gate = asyncio.Semaphore(2)

            async def ensure(window: list[CID]) -> dict[CID, bytes]:
                async with gate:
                    return await self._ensure(window, prefer, bulk)

            while level:
                nxt: list[CID] = []
                windows = [level[i : i + self.cfg.window_blocks]
                           for i in range(0, len(level), self.cfg.window_blocks)]
                tasks = [asyncio.ensure_future(ensure(w)) for w in windows]
                try:
                    results = [await t for t in tasks]
                except BaseException:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
                for window, blocks in zip(windows, results):
                    for cid in window:
                        if cid.codec == DAG_PB:
                            node = decode_node(blocks[cid])
                            if cid == root:
                                size = node.filesize
                            nxt.extend(link.cid for link in node.links)
                        elif cid == root:
                            # A one-block file: its raw leaf is the whole file (leaves come
                            # back from _ensure as placeholders, so ask the store its length).
                            size = store.block_size(cid) or 0
                level = nxt
            await asyncio.to_thread(store.add_root, root, size)
            return size
        finally:
            store.unprotect(root)

    async def _ensure(self, window: list[CID], prefer: Sequence[str], bulk: bool) -> dict[CID, bytes]:
        """Internal nodes of ``window`` (read or fetched) keyed by CID; leaves only made
        durable (an empty placeholder is returned for them)."""
        store = self.store

        def local() -> tuple[dict[CID, bytes], list[CID]]:
            have: dict[CID, bytes] = {}
            missing: list[CID] = []
            for c in window:
                if not store.has(c):
                    missing.append(c)
                elif c.codec == DAG_PB:
                    try:
                        have[c] = store.get_block(c)
                    except BlockDamaged:
                        missing.append(c)
                else:
                    have[c] = b""
            return have, missing

        have, missing = await asyncio.to_thread(local)
        if missing:
            got = await self.fetch_blocks(missing, prefer=prefer, bulk=bulk)
            lost = [c for c in missing if c not in got]
            if lost:
                raise BlockMissing("block at no reachable peer", cid=str(lost[0]))
            # _ask verified each against its CID: store without hashing again. replace:
            # some were present but damaged, and must be overwritten, not deduped.
            await asyncio.to_thread(
                lambda: store.put_verified([(c, got[c]) for c in missing], replace=True)
            )
            for c in missing:
                have[c] = got[c] if c.codec == DAG_PB else b""
        return have

    # -- replication ------------------------------------------------------------------

    def push_to(self, peers: Sequence[str]) -> PushReplication:
        """A push of one new upload to ``peers`` (pass it to ``ingest`` as its sink). Until
        it finishes or aborts, peers' bulk requests to this node wait (see ``get``)."""
        self._uploads += 1
        self._quiet.clear()

        def done() -> None:
            self._uploads -= 1
            if not self._uploads:
                self._quiet.set()

        return PushReplication(self._request, [p for p in peers if p != self.node_id], self.cfg.push,
                               on_done=done)

    async def replicate(self, info: FileInfo, k: int | None = None, *,
                        exclude: Sequence[str] = (), bulk: bool = False) -> ReplicationResult:
        """Ask ``k`` peers (default: the configured replication factor) not in ``exclude``
        to pull the file (``bulk``: as background work, behind uploads); returns which
        confirmed a durable copy. More peers are tried if some fail."""
        want = self.cfg.replication if k is None else k
        peers = [p for p in self._peers() if p != self.node_id and p not in exclude]
        msg: dict[str, object] = {"op": "replicate", "root": CID.parse(info.cid).to_bytes(), "size": info.size}
        if bulk:
            msg["bulk"] = True
        payload = pack(msg)
        confirmed: list[str] = []
        failed: list[str] = []

        async def one(peer: str) -> None:
            try:
                answer = unpack(
                    await asyncio.wait_for(
                        self._request(peer, payload, self.cfg.replicate_timeout),
                        self.cfg.replicate_timeout + 1.0,
                    )
                )
                ok = isinstance(answer, dict) and answer.get("ok") is True
            except (PieError, OSError, asyncio.TimeoutError) as exc:
                log.info("replication of %s to %s failed: %s", info.cid, peer, type(exc).__name__)
                ok = False
            (confirmed if ok else failed).append(peer)

        queue = list(peers)
        while len(confirmed) < want and queue:
            batch, queue = queue[: want - len(confirmed)], queue[want - len(confirmed) :]
            await asyncio.gather(*(one(p) for p in batch))
        return ReplicationResult(info.cid, tuple(confirmed), tuple(failed))
