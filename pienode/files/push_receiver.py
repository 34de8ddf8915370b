"""The replica's side of push replication (issue 4): see ``pienode.files.push`` for the
protocol and the sender.

Owns: push sessions keyed by (peer, session id). Verifies every pushed block against its CID
before it touches disk (it never trusts the sender), appends it to a pack writer of the
session's own, and on ``push-commit`` walks the DAG from the root (sizes included), pulls any
block that did not arrive, then fsyncs and makes the whole file visible in one synced batch.

Must never: store or index a block that does not hash to its CID, make a root visible before
every block under it is durable here, or let one peer touch another peer's session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from pienode.encoding import pack
from pienode.errors import FileStoreError
from pienode.files.cid import CID, DAG_PB, RAW
from pienode.files.dagpb import DagError, decode_node
from pienode.files.push import Block, FetchFn, PushConfig, decode_push
from pienode.files.packs import PackWriter
from pienode.files.store import BlockDamaged, BlockMissing, PackStore

log = logging.getLogger(__name__)

#: A commit may need to pull missing blocks level by level; a UnixFS DAG of 2^64 bytes is
#: far shallower than this.
_MAX_DAG_DEPTH = 16
_FETCH_RETRIES = 4


@dataclass(eq=False, slots=True)
class _Session:
    peer: str
    sid: bytes
    writer: PackWriter | None = None
    lengths: dict[bytes, int] = field(default_factory=dict)  # digest -> length, all received
    nodes: dict[CID, bytes] = field(default_factory=dict)  # dag-pb blocks, for the DAG walk
    total: int = 0
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None


def _first_bad(blocks: list[tuple[CID, memoryview]]) -> int:
    for i, (cid, data) in enumerate(blocks):
        if hashlib.sha256(data).digest() != cid.digest:
            return i
    return -1


class PushReceiver:
    """The replica's side: sessions keyed by (peer, session id)."""

    def __init__(self, store: PackStore, fetch: FetchFn, config: PushConfig | None = None) -> None:
        """Args:
        fetch: ``await fetch(cids, prefer)`` -> verified blocks from peers (the exchange's
            ``fetch_blocks``), for blocks a commit finds missing.
        """
        self.store = store
        self.cfg = config or PushConfig()
        self._fetch = fetch
        self._sessions: dict[tuple[str, bytes], _Session] = {}
        # Sessions dropped lately: a push still in flight for one must not open it again.
        self._dropped: deque[tuple[str, bytes]] = deque(maxlen=256)
        self.bad_blocks = 0
        self.sessions_committed = 0
        self.sessions_dropped = 0

    def sessions(self) -> int:
        return len(self._sessions)

    def _session(self, peer: str, sid: bytes) -> _Session:
        key = (peer, sid)
        s = self._sessions.get(key)
        if s is None:
            if key in self._dropped:
                raise FileStoreError("push session was dropped")
            if sum(1 for p, _ in self._sessions if p == peer) >= self.cfg.max_sessions_per_peer:
                raise FileStoreError("too many uploads pushed by this peer at once")
            s = self._sessions[key] = _Session(peer, sid)
        self._arm(s)
        return s

    def _arm(self, s: _Session) -> None:
        if s.timer is not None:
            s.timer.cancel()
        loop = asyncio.get_running_loop()
        s.timer = loop.call_later(self.cfg.idle_timeout, lambda: loop.create_task(self._expire(s)))

    async def _expire(self, s: _Session) -> None:
        log.info("push session from %s idle for %.0fs: dropped", s.peer, self.cfg.idle_timeout)
        await self.drop(s)

    async def drop(self, s: _Session) -> None:
        """Forget the session and cut its uncommitted bytes (waits for a write under way)."""
        if self._sessions.get((s.peer, s.sid)) is s:
            del self._sessions[(s.peer, s.sid)]
            self._dropped.append((s.peer, s.sid))
        if s.timer is not None:
            s.timer.cancel()
        async with s.lock:
            if s.closed:
                return
            s.closed = True
            self.sessions_dropped += 1
            if s.writer is not None:
                await asyncio.to_thread(s.writer.abort)

    async def on_push(self, peer: str, payload: bytes, *, expect_sid: bytes | None = None) -> bytes:
        """Verify and append one push frame. A block that does not match its CID drops the
        whole session (nothing of it is kept) and is refused.

        Raises:
            FileStoreError: malformed frame, limits, a bad block, or a dropped session.
        """
        sid, blocks = decode_push(payload)
        if expect_sid is not None and sid != expect_sid:
            raise FileStoreError("push frame of another session")
        s = self._session(peer, sid)
        bad = await asyncio.to_thread(_first_bad, blocks)
        if bad >= 0:
            self.bad_blocks += 1
            await self.drop(s)
            raise BlockDamaged("pushed block does not match its CID", cid=str(blocks[bad][0]))
        async with s.lock:
            if s.closed:
                raise FileStoreError("push session was dropped")
            s.total += sum(len(d) for _, d in blocks)
            if s.total > self.cfg.max_session_bytes:
                raise FileStoreError("push session exceeds the maximum file size")
            await asyncio.to_thread(self._append, s, blocks)
        return pack({"ok": True})

    def _append(self, s: _Session, blocks: Sequence[Block], replace: bool = False) -> None:
        if s.writer is None:
            s.writer = self.store.writer()
        for cid, data in blocks:
            s.writer.put(cid, data, force=replace)
            s.lengths[cid.digest] = len(data)
            if cid.codec == DAG_PB:
                s.nodes[cid] = bytes(data)

    async def on_commit(self, peer: str, sid: bytes, root: CID, size: int, frame: bytes | None = None) -> bytes:
        """Append ``frame`` (the last blocks, if any), complete the session's DAG under
        ``root`` (pulling what did not arrive), then make it durable and visible.

        Raises:
            FileStoreError / DagError / BlockMissing: the file cannot be completed here; the
                session is dropped.
        """
        if frame is not None:
            await self.on_push(peer, frame, expect_sid=sid)
        s = self._sessions.get((peer, sid))
        if s is None:
            if await asyncio.to_thread(self.store.has_root, root):
                return pack({"ok": True})  # a repeated commit of a file already here
            raise FileStoreError("unknown push session")
        self._arm(s)
        self.store.protect(root)  # blocks deduped against this store stay until we commit
        try:
            async with s.lock:
                if s.closed:
                    raise FileStoreError("push session was dropped")
                for attempt in range(_MAX_DAG_DEPTH):
                    missing = await asyncio.to_thread(self._missing, s, root, size)
                    if not missing:
                        break
                    got = await self._fetch(missing, [peer])
                    lost = [c for c in missing if c not in got]
                    if lost and attempt < _FETCH_RETRIES:
                        # The sender commits its own copy while we commit ours: a block it
                        # has not made visible yet is there a moment later.
                        await asyncio.sleep(0.05 * (attempt + 1))
                        got.update(await self._fetch(lost, [peer]))
                        lost = [c for c in missing if c not in got]
                    if lost:
                        raise BlockMissing("block neither pushed nor at any peer", cid=str(lost[0]))
                    # replace: a block stored here but damaged must be overwritten, not deduped.
                    fetched = [(c, got[c]) for c in missing]
                    await asyncio.to_thread(self._append, s, fetched, True)
                else:
                    raise DagError("DAG deeper than any file")
                writer = s.writer
                if writer is None:
                    writer = s.writer = await asyncio.to_thread(self.store.writer)
                await asyncio.to_thread(writer.commit, root, size)
                s.closed = True
        except BaseException:
            await self.drop(s)
            raise
        finally:
            self.store.unprotect(root)
        self._sessions.pop((peer, sid), None)
        if s.timer is not None:
            s.timer.cancel()
        self.sessions_committed += 1
        return pack({"ok": True})

    def _missing(self, s: _Session, root: CID, size: int) -> list[CID]:
        """Blocks under ``root`` neither received in ``s`` nor stored here; checks every
        leaf's length and every node's file size against the link that names it.

        Raises:
            DagError: sizes that do not add up (the sender's DAG is inconsistent).
        """
        store = self.store
        missing: list[CID] = []
        todo: list[tuple[CID, int]] = [(root, size)]
        while todo:
            cid, expect = todo.pop()
            if cid.codec == RAW:
                n = s.lengths.get(cid.digest)
                if n is None:
                    n = store.block_size(cid)
                if n is None:
                    missing.append(cid)
                elif n != expect:
                    raise DagError("leaf length differs from its link's size")
                continue
            block = s.nodes.get(cid)  # every pushed internal node is kept (they are small)
            if block is None:
                try:
                    block = store.get_block(cid)
                except (BlockMissing, BlockDamaged):
                    missing.append(cid)
                    continue
            node = decode_node(block)
            if node.filesize != expect:
                raise DagError("node's file size differs from its link's size")
            todo.extend((link.cid, link.filesize) for link in node.links)
        return missing

    async def on_abort(self, peer: str, sid: bytes) -> bytes:
        s = self._sessions.get((peer, sid))
        if s is not None:
            await self.drop(s)
        return pack({"ok": True})

    async def close(self) -> None:
        for s in list(self._sessions.values()):
            await self.drop(s)
