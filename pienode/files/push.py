"""Streaming replication of an upload while it is being ingested (issue 4).

The hospital that receives an upload pushes every block to the acknowledging hospitals as it
stores it, instead of asking them to pull the file once it is all stored: the copies are
made in parallel with the ingest, not after it. Owns the protocol and the sender; the
replica's side is ``pienode.files.push_receiver``:

- ``PushReplication`` (the sender, an ``IngestSink`` of ``pienode.files.stream.ingest``):
  sends ``push`` frames with a few requests in flight per peer, then ``push-commit``;
  records which peers confirmed a durable copy and which failed (the caller falls back to
  pull replication for those).
- ``PushReceiver`` (the replica): verifies every pushed block against its CID before it
  touches disk (it never trusts the sender), appends it to a pack writer of the session's
  own, and on ``push-commit`` walks the DAG from the root (sizes included), pulls any block
  that did not arrive, then fsyncs and makes the whole file visible in one synced batch.

Messages on the files channel:
- push frame (binary, not msgpack, so 1 GiB is not re-encoded twice on each side)::

      0xC1 | session id (16) | count (u16) | count x (codec u8 | sha2-256 digest 32 | length u32)
      | the blocks' bytes back to back

  0xC1 is the one byte msgpack never uses, so a push frame cannot be mistaken for a message.
  Answer: ``{"ok": true}`` (or ``{"ok": false, "error": ...}``: the session is dropped).
- ``{"op": "push-commit", "sid": bytes, "root": cid bytes, "size": n, "frame"?: push frame}``
  -> ``{"ok": bool}`` once the file is durable and visible here; ``frame`` carries the last
  blocks (less than a frame's worth), so a small file takes one round trip.
- ``{"op": "push-abort", "sid": bytes}`` -> ``{"ok": true}``.

Must never: store or index a block that does not hash to its CID, make a root visible before
every block under it is durable here, hold more than the blocks of the pushes in flight in
memory, or let one peer touch another peer's session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pienode.buffers import Parts
from pienode.encoding import pack, unpack
from pienode.errors import FileStoreError, PieError
from pienode.files.cid import CID, CODECS

log = logging.getLogger(__name__)

PUSH_MAGIC = 0xC1
SID_SIZE = 16
_HEAD = struct.Struct(">B16sH")
_ENTRY = struct.Struct(">B32sI")

#: ``await request(peer, payload, timeout) -> answer``: a push frame goes as ``Parts``.
RequestFn = Callable[[str, "bytes | Parts", float], Awaitable[bytes]]
FetchFn = Callable[[list[CID], Sequence[str]], Awaitable[dict[CID, bytes]]]
Block = tuple[CID, "bytes | memoryview"]


@dataclass(frozen=True, slots=True)
class PushConfig:
    """Attributes:
    push_bytes: block bytes per push frame (stays under the peer network's frame limit).
    inflight: push frames awaiting an answer per peer (bounds memory on both sides).
    timeout: seconds for one push frame's answer.
    commit_timeout: seconds a replica may take to check, complete and fsync a file.
    idle_timeout: a replica drops a session that has heard nothing this long.
    max_sessions_per_peer: uploads one peer may push to this node at once.
    max_session_bytes: most bytes one session may push (the largest upload, with room).
    """

    push_bytes: int = 3 * 1024 * 1024
    inflight: int = 4
    timeout: float = 30.0
    commit_timeout: float = 600.0
    idle_timeout: float = 120.0
    max_sessions_per_peer: int = 4
    max_session_bytes: int = 4 << 30


def push_parts(sid: bytes, blocks: Sequence[Block]) -> Parts:
    """One push frame carrying ``blocks`` (whose CIDs the caller computed from their bytes),
    as its header and the blocks where they lie: the peer link seals them into its frame
    without a joined copy (issue 7)."""
    head = [_HEAD.pack(PUSH_MAGIC, sid, len(blocks))]
    head += [_ENTRY.pack(cid.codec, cid.digest, len(data)) for cid, data in blocks]
    return Parts([b"".join(head), *(data for _, data in blocks)])


def encode_push(sid: bytes, blocks: Sequence[Block]) -> bytes:
    """``push_parts`` joined: one push frame as bytes."""
    return bytes(push_parts(sid, blocks))


def decode_push(payload: bytes) -> tuple[bytes, list[tuple[CID, memoryview]]]:
    """(session id, blocks as views into ``payload``). Nothing is verified here.

    Raises:
        FileStoreError: a malformed frame.
    """
    if len(payload) < _HEAD.size:
        raise FileStoreError("truncated push frame")
    magic, sid, count = _HEAD.unpack_from(payload, 0)
    if magic != PUSH_MAGIC:
        raise FileStoreError("not a push frame")
    pos = _HEAD.size
    data_pos = pos + count * _ENTRY.size
    if data_pos > len(payload):
        raise FileStoreError("truncated push frame")
    view = memoryview(payload)
    out: list[tuple[CID, memoryview]] = []
    for _ in range(count):
        codec, digest, length = _ENTRY.unpack_from(payload, pos)
        pos += _ENTRY.size
        if codec not in CODECS:
            raise FileStoreError("unsupported codec in push frame")
        if data_pos + length > len(payload):
            raise FileStoreError("truncated push frame")
        out.append((CID(codec, digest), view[data_pos : data_pos + length]))
        data_pos += length
    if data_pos != len(payload):
        raise FileStoreError("trailing bytes in push frame")
    return sid, out


def _groups(blocks: Sequence[Block], budget: int) -> list[list[Block]]:
    out: list[list[Block]] = []
    cur: list[Block] = []
    size = 0
    for b in blocks:
        if cur and size + len(b[1]) > budget:
            out.append(cur)
            cur, size = [], 0
        cur.append(b)
        size += len(b[1])
    if cur:
        out.append(cur)
    return out


def _ok(answer: bytes) -> tuple[bool, str]:
    try:
        msg = unpack(answer)
    except PieError:
        return False, "malformed answer"
    if isinstance(msg, dict) and msg.get("ok") is True:
        return True, ""
    error = msg.get("error") if isinstance(msg, dict) else None
    return False, error if isinstance(error, str) else "refused"


class PushReplication:
    """The sending side of one upload's push to ``peers``. A peer that fails is dropped
    (counted in ``failed``); the upload itself never fails because of a peer."""

    def __init__(self, request: RequestFn, peers: Sequence[str], config: PushConfig | None = None,
                 *, on_done: Callable[[], None] | None = None) -> None:
        """Args:
        on_done: called once, when the push finishes or aborts."""
        self.cfg = config or PushConfig()
        self._on_done = on_done
        self.sid = os.urandom(SID_SIZE)
        self._request = request
        self._live: list[str] = list(dict.fromkeys(peers))
        self._sems = {p: asyncio.Semaphore(self.cfg.inflight) for p in self._live}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[Block] = []  # under push_bytes, not sent yet: goes with the commit
        self._held_bytes = 0
        self.failed: dict[str, str] = {}
        self.confirmed: tuple[str, ...] = ()
        self.bytes_sent = 0
        self.waited_s = 0.0  # time the upload waited for a peer's answers (back-pressure)
        self.commit_s = 0.0  # time the peers took to commit

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._live)

    def _done(self) -> None:
        if self._on_done is not None:
            callback, self._on_done = self._on_done, None
            callback()

    def _fail(self, peer: str, why: str) -> None:
        if peer in self._live:
            self._live.remove(peer)
            self.failed[peer] = why
            log.info("push replication to %s dropped: %s", peer, why)

    async def send(self, blocks: Sequence[Block]) -> None:
        """Queue ``blocks`` to every live peer; waits only while ``inflight`` frames to a peer
        are unanswered (back-pressure on the ingest). Less than a frame's worth is held back
        and travels with the commit, so a small file costs one round trip."""
        self._held += blocks
        self._held_bytes += sum(len(d) for _, d in blocks)
        if self._held_bytes < self.cfg.push_bytes:
            return
        groups = _groups(self._held, self.cfg.push_bytes)
        self._held = groups.pop() if sum(len(d) for _, d in groups[-1]) < self.cfg.push_bytes else []
        self._held_bytes = sum(len(d) for _, d in self._held)
        for group in groups:
            if not self._live:
                return
            payload = push_parts(self.sid, group)
            for peer in list(self._live):
                sem = self._sems[peer]
                if sem.locked():
                    t = time.monotonic()
                    await sem.acquire()
                    self.waited_s += time.monotonic() - t
                else:
                    await sem.acquire()
                if peer not in self._live:
                    sem.release()
                    continue
                task = asyncio.create_task(self._push(peer, payload, sem))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                self.bytes_sent += len(payload)

    async def _push(self, peer: str, payload: Parts, sem: asyncio.Semaphore) -> None:
        try:
            answer = await asyncio.wait_for(
                self._request(peer, payload, self.cfg.timeout), self.cfg.timeout + 1.0
            )
            ok, why = _ok(answer)
            if not ok:
                self._fail(peer, why)
        except (PieError, OSError, TimeoutError) as exc:
            self._fail(peer, type(exc).__name__)
        finally:
            sem.release()

    async def finish(self, root: CID, size: int) -> tuple[str, ...]:
        """Wait for every push, then ask each live peer to commit; returns (and keeps in
        ``confirmed``) the peers that now hold the file durably."""
        t = time.monotonic()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.waited_s += time.monotonic() - t
        t = time.monotonic()
        fields: dict[str, object] = {"op": "push-commit", "sid": self.sid, "root": root.to_bytes(), "size": size}
        if self._held:
            fields["frame"] = encode_push(self.sid, self._held)
            self._held, self._held_bytes = [], 0
        msg = pack(fields)

        async def commit(peer: str) -> str | None:
            try:
                answer = await asyncio.wait_for(
                    self._request(peer, msg, self.cfg.commit_timeout), self.cfg.commit_timeout + 1.0
                )
            except (PieError, OSError, TimeoutError) as exc:
                self._fail(peer, type(exc).__name__)
                return None
            ok, why = _ok(answer)
            if not ok:
                self._fail(peer, why)
                return None
            return peer

        try:
            done = await asyncio.gather(*(commit(p) for p in list(self._live)))
        finally:
            self._done()
        self.commit_s = time.monotonic() - t
        self.confirmed = tuple(p for p in done if p is not None)
        return self.confirmed

    async def abort(self) -> None:
        """Stop pushing and tell the peers to drop what they hold of this upload (best
        effort: a peer that misses it drops the session after its idle timeout)."""
        self._done()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        msg = pack({"op": "push-abort", "sid": self.sid})
        peers, self._live = self._live, []

        async def tell(peer: str) -> None:
            try:
                await asyncio.wait_for(self._request(peer, msg, 5.0), 6.0)
            except (PieError, OSError, TimeoutError):
                pass

        await asyncio.gather(*(tell(p) for p in peers))
