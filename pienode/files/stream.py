"""Streaming ingest and read of whole files over the block store, in bounded memory.

Owns: turning an async byte stream into a stored, durable DAG (``ingest``), handing each
block to an ``IngestSink`` as it is stored (the push to replicas, ``pienode.files.push``),
and walking a DAG to serve a byte range (``read``), repairing missing or damaged blocks
from a ``BlockSource`` (the peer exchange) on the way.

Memory: ingest holds at most ``PIPELINE`` + 1 batches of ``BATCH_CHUNKS`` chunks (hashing or
being written in worker threads, plus the one being received), the builder's link records
and what the sink has in flight; read holds one
batch being served and one read ahead. Hashing and disk I/O run in worker threads in
batches big enough that the hand-off cost is negligible, so the event loop keeps answering.

Must never: leave anything visible or on disk from a failed or oversized upload, or hand
out a byte that has not been checked against its CID.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Sequence,
)
from pathlib import Path
from typing import Protocol

from pienode.errors import TooLarge
from pienode.files.cid import CID, DAG_PB, RAW
from pienode.files.dagpb import DagError, decode_node
from pienode.files.packs import PackWriter
from pienode.files.store import BlockDamaged, BlockMissing, FileInfo, PackStore
from pienode.files.unixfs import DagBuilder, Rechunker

BATCH_CHUNKS = 16  # 4 MiB per worker-thread hand-off
READ_BATCH = 8  # leaves per read hand-off (2 MiB)
PIPELINE = 3  # ingest batches in flight (hashing or writing)
SMALL_FILE = 8 << 20  # whole files up to this size are read in one worker-thread hop
INLINE_READ = 2 << 20  # ... and unchecked ones up to this size on the event loop
SPANS_MAX = 64 << 20  # unchecked files up to this size go out with sendfile (nothing in memory)

Span = tuple[Path, int, int]  # pack file, offset, length
READ_AHEAD = 2  # read batches loading at once


class IngestSink(Protocol):
    """Receives every block of an upload while it is ingested (each block's CID was computed
    here from its bytes): the push to the acknowledging hospitals."""

    async def send(self, blocks: Sequence[tuple[CID, bytes | memoryview]]) -> None:
        """Take the blocks (copy what is kept: views die after the call); may wait for
        room (back-pressure on the upload). Never raises for a peer's failure."""
        ...

    async def finish(self, root: CID, size: int) -> tuple[str, ...]:
        """Every block was sent: make the copies durable; returns who confirmed."""
        ...

    async def abort(self) -> None:
        """The upload failed: drop whatever was sent."""
        ...


class BlockSource(Protocol):
    """Where missing or damaged blocks come from (the peer exchange)."""

    async def fetch_blocks(self, cids: list[CID]) -> dict[CID, bytes]:
        """Blocks found among peers, each already verified against its CID."""
        ...


def _hash_leaves(leaves: list[bytes | memoryview]) -> list[bytes]:
    return [hashlib.sha256(leaf).digest() for leaf in leaves]


Blocks = list[tuple[CID, "bytes | memoryview"]]


def _link(builder: DagBuilder, leaves: list[bytes | memoryview], digests: list[bytes]) -> Blocks:
    """The leaves as blocks, with the internal nodes they complete, in file order (cheap:
    the hashing is done; a node is encoded once per 174 leaves)."""
    out: Blocks = []
    for leaf, digest in zip(leaves, digests):
        cid = CID(RAW, digest)
        out.append((cid, leaf))
        out += builder.add_leaf_cid(cid, len(leaf))
    return out


def _write(w: PackWriter, blocks: Sequence[tuple[CID, bytes | memoryview]]) -> None:
    for cid, data in blocks:
        w.put(cid, data)


def _commit(w: PackWriter, blocks: Sequence[tuple[CID, bytes | memoryview]], root: CID, size: int) -> None:
    _write(w, blocks)
    w.commit(root, size)


async def ingest(
    store: PackStore, chunks: AsyncIterable[bytes], max_bytes: int, *, sink: IngestSink | None = None
) -> FileInfo:
    """Store the bytes of ``chunks`` as one file; returns its CID once durable here (and,
    with a ``sink``, once the sink's copies were asked to commit: see ``sink.finish``).

    Batches go through two stages: hashing in worker threads (batches may hash in parallel,
    on both cores), then, strictly in file order (the DAG builder and the pack are
    sequential), writing in a worker thread while the same blocks go to ``sink``. Each block
    is hashed once here: the CID computed from the bytes is what is stored and sent. At most
    ``PIPELINE`` batches are in flight. The sink's commit runs with the local one (fsync, then
    index): both are short, since the pack's write-back started while the upload streamed.

    Raises:
        TooLarge: more than ``max_bytes`` arrived; nothing is kept (here or by the sink).
        Whatever ``chunks`` raises (a broken upload); nothing is kept.
    """
    try:
        return await _ingest(store, chunks, max_bytes, sink)
    except BaseException:
        if sink is not None:
            await sink.abort()
        raise


async def _ingest(
    store: PackStore, chunks: AsyncIterable[bytes], max_bytes: int, sink: IngestSink | None
) -> FileInfo:
    opening = asyncio.ensure_future(asyncio.to_thread(store.writer))
    try:
        w = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The thread still hands out a writer: give its pack back.
        def give_back(f: asyncio.Future[PackWriter]) -> None:
            if not f.cancelled() and f.exception() is None:
                f.result().abort()

        opening.add_done_callback(give_back)
        raise
    builder = DagBuilder()
    rechunker = Rechunker()
    total = 0
    batch: list[bytes | memoryview] = []
    stages: deque[asyncio.Task[None]] = deque()

    async def stage(leaves: list[bytes | memoryview], prev: asyncio.Task[None] | None) -> None:
        digests = await asyncio.to_thread(_hash_leaves, leaves)
        if prev is not None:
            await prev
        blocks = _link(builder, leaves, digests)
        if sink is None:
            await asyncio.to_thread(_write, w, blocks)
        else:
            await _both(asyncio.to_thread(_write, w, blocks), sink.send(blocks))

    async def push(leaves: list[bytes | memoryview]) -> None:
        stages.append(asyncio.ensure_future(stage(leaves, stages[-1] if stages else None)))
        while len(stages) > PIPELINE:
            await stages.popleft()

    try:
        async for piece in chunks:
            total += len(piece)
            if total > max_bytes:
                raise TooLarge("upload exceeds the maximum file size", max_bytes=max_bytes)
            batch += rechunker.feed(piece)
            if len(batch) >= BATCH_CHUNKS:
                await push(batch)
                batch = []
        tail = rechunker.flush()
        if tail is not None:
            batch.append(tail)
        if batch:
            await push(batch)
        while stages:
            await stages.popleft()
        root, size, last = builder.finish()
        local = asyncio.to_thread(_commit, w, last, root, size)
        if sink is None:
            await local
        else:
            # Both commits (an fsync each) at once; a replica that misses a block pulls it
            # from us once our commit makes it visible.
            await _both(local, _send_and_finish(sink, last, root, size))
    except BaseException:
        # Threads cannot be cancelled; let every stage end before truncating the pack.
        await asyncio.gather(*stages, return_exceptions=True)
        await asyncio.to_thread(w.abort)
        raise
    return FileInfo(str(root), size)


async def _send_and_finish(sink: IngestSink, last: Sequence[tuple[CID, bytes | memoryview]],
                           root: CID, size: int) -> None:
    await sink.send(last)
    await sink.finish(root, size)


async def _both(a: Awaitable[object], b: Awaitable[object]) -> None:
    """Run both to the end (a thread cannot be cancelled midway), then raise the first
    failure, if any."""
    results = await asyncio.gather(a, b, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _get_blocks(
    store: PackStore, cids: list[CID], source: BlockSource | None, verify: bool = True
) -> list[bytes | memoryview]:
    """Blocks, repairing what is missing or damaged here from ``source``; verified against
    their CIDs unless ``verify`` is False (the caller checks them itself)."""
    out, damaged = await asyncio.to_thread(store.get_blocks, cids, verify=verify)
    return await _repair(store, cids, out, len(damaged), source)


async def _repair(
    store: PackStore, cids: list[CID], out: list[bytes | memoryview | None], damaged: int,
    source: BlockSource | None,
) -> list[bytes | memoryview]:
    """``out`` (blocks read here, None where missing or damaged) completed from ``source``;
    what the source supplied is verified and stored in place of the bad copies."""
    bad = [i for i, b in enumerate(out) if b is None]
    if bad:
        wanted = [cids[i] for i in bad]
        got = await source.fetch_blocks(wanted) if source is not None else {}
        missing = [c for c in wanted if c not in got]
        if missing:
            if damaged:
                raise BlockDamaged("damaged block and no peer could supply it", cid=str(missing[0]))
            raise BlockMissing("block not found here or at any peer", cid=str(missing[0]))

        def save() -> None:
            # put_blocks verifies each against its CID again: never trust the source blindly.
            store.put_blocks([(cid, got[cid]) for cid in wanted], replace=True)
            if damaged:
                store.note_repaired(damaged)

        await asyncio.to_thread(save)
        for i in bad:
            out[i] = got[cids[i]]
    return [b for b in out if b is not None]


async def _leaf_ranges(
    store: PackStore, cid: CID, base: int, start: int, end: int, source: BlockSource | None
) -> AsyncGenerator[tuple[CID, int, int, int], None]:
    """(leaf, expected length, lo, hi) for each leaf overlapping [start, end), in order;
    lo/hi are offsets inside the leaf. Leaves outside the range are never read."""
    if cid.codec == RAW:
        yield cid, -1, max(start - base, 0), end - base
        return
    (block,) = await _get_blocks(store, [cid], source)
    node = decode_node(block)
    off = base
    for link in node.links:
        lo, hi = off, off + link.filesize
        if hi > start and lo < end:
            if link.cid.codec == RAW:
                yield link.cid, link.filesize, max(start - lo, 0), min(end, hi) - lo
            elif link.cid.codec == DAG_PB:
                async for item in _leaf_ranges(store, link.cid, lo, start, end, source):
                    yield item
        if lo >= end:
            break
        off = hi


async def read(
    store: PackStore,
    cid: CID | str,
    start: int = 0,
    end: int | None = None,
    *,
    source: BlockSource | None = None,
    verify: bool = True,
) -> AsyncIterator[bytes | memoryview]:
    """The bytes [start, end) of the file rooted at ``cid`` (``end`` None: to its end).
    Leaves are checked against their CIDs unless ``verify`` is False (for a caller that
    checks every byte itself); internal DAG nodes always are.

    Raises (while iterating):
        BlockMissing / BlockDamaged: a block neither here nor at any peer.
        DagError: a DAG whose sizes do not add up.
    """
    root = cid if isinstance(cid, CID) else CID.parse(cid)
    if end is None:
        end = await stat(store, root, source=source)
    if start >= end:
        return
    leaves = _leaf_ranges(store, root, 0, start, end, source)
    exhausted = False

    async def next_items() -> list[tuple[CID, int, int, int]]:
        nonlocal exhausted
        items = []
        if not exhausted:
            async for item in leaves:
                items.append(item)
                if len(items) == READ_BATCH:
                    break
            else:
                exhausted = True
        return items

    async def load(items: list[tuple[CID, int, int, int]]) -> list[bytes | memoryview]:
        blocks = await _get_blocks(store, [c for c, _, _, _ in items], source, verify)
        out = []
        for (_c, expected, lo, hi), data in zip(items, blocks):
            if expected >= 0 and len(data) != expected:
                raise DagError("leaf length differs from its link's size")
            out.append(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
        return out

    # Batches load in worker threads READ_AHEAD at a time (hashing on both cores) while the
    # caller consumes the oldest; the DAG walk itself stays sequential.
    ahead: deque[asyncio.Task[list[bytes | memoryview]]] = deque()
    try:
        while True:
            while len(ahead) < READ_AHEAD:
                items = await next_items()
                if not items:
                    break
                ahead.append(asyncio.ensure_future(load(items)))
            if not ahead:
                return
            for piece in await ahead.popleft():
                yield piece
    finally:
        for task in ahead:
            task.cancel()
        await asyncio.gather(*ahead, return_exceptions=True)
        await leaves.aclose()


def _small_leaves(store: PackStore, root: CID, limit: int,
                  size: int | None = None) -> tuple[int, list[CID], list[int]] | None:
    """(size, leaf CIDs, their lengths) of a file of at most ``limit`` bytes whose root is
    here and links straight to raw leaves; None when it is not such a file. ``size``: the
    file's size when the caller just looked its root up (``store.file_size``)."""
    if size is None:
        try:
            size = store.file_size(root)
        except (BlockMissing, BlockDamaged):
            return None
    if size > limit:
        return None
    if root.codec == RAW:
        return size, [root], [size]
    try:
        links = decode_node(store.get_block(root)).links
    except (BlockMissing, BlockDamaged):
        return None
    if any(link.cid.codec != RAW for link in links):
        return None
    lengths = [link.filesize for link in links]
    if sum(lengths) != size:
        raise DagError("the root's links do not add up to the file size")
    return size, [link.cid for link in links], lengths


def _small_file(
    store: PackStore, root: CID, verify: bool, limit: int
) -> tuple[int, list[CID], list[int], list[bytes | memoryview | None], int] | None:
    """What ``read_all`` reads at once (see ``_small_leaves``): (size, leaf CIDs, their
    lengths, the leaves read here (None: missing or damaged), damaged count)."""
    small = _small_leaves(store, root, limit)
    if small is None:
        return None
    size, cids, lengths = small
    blocks, damaged = store.get_blocks(cids, verify=verify)
    return size, cids, lengths, blocks, len(damaged)


def file_spans(store: PackStore, cid: CID, limit: int | None = None,
               size: int | None = None) -> tuple[int, list[Span]] | None:
    """Where the bytes of a small file stored whole here lie, unread and unchecked, for a
    client that checks every byte itself: (size, runs of (pack file, offset, length)) to
    send straight from the page cache; None when ``read_all`` must serve it. Index lookups
    only: cheap enough for the event loop. ``size`` as in ``_small_leaves``."""
    small = _small_leaves(store, cid, SPANS_MAX if limit is None else limit, size)
    if small is None:
        return None
    size, cids, _ = small
    spans = store.spans(cids)
    if spans is None or sum(n for _, _, n in spans) != size:
        return None
    return size, spans


async def read_all(
    store: PackStore, cid: CID | str, *, source: BlockSource | None = None, verify: bool = True
) -> tuple[int, AsyncIterator[bytes | memoryview]]:
    """The size of the file rooted at ``cid`` and an iterator over all its bytes.

    A small file (up to ``SMALL_FILE``, one level of raw leaves, the common EMR record) is
    read at once with one ``pread`` per run of adjacent leaves, in one worker-thread hop;
    unchecked and up to ``INLINE_READ`` bytes, on the event loop itself (a few index
    lookups and one read from the page cache cost less than the hop). Anything else
    streams through ``read``. ``verify`` as in ``read``.

    Raises:
        BlockMissing / BlockDamaged: the root, or (small files) a leaf, neither here nor at
            any peer; for larger files, ``read``'s errors while iterating.
    """
    root = cid if isinstance(cid, CID) else CID.parse(cid)
    small = None if verify else _small_file(store, root, False, INLINE_READ)
    if small is None:
        small = await asyncio.to_thread(_small_file, store, root, verify, SMALL_FILE)
    if small is None:
        size = await stat(store, root, source=source)
        return size, read(store, root, 0, size, source=source, verify=verify)
    size, cids, lengths, found, damaged = small
    blocks = await _repair(store, cids, found, damaged, source)
    if any(len(b) != n for b, n in zip(blocks, lengths)):
        raise DagError("leaf length differs from its link's size")

    async def pieces() -> AsyncIterator[bytes | memoryview]:
        for b in blocks:
            if len(b):
                yield b

    return size, pieces()


async def stat(store: PackStore, cid: CID | str, *, source: BlockSource | None = None) -> int:
    """Size in bytes of the file rooted at ``cid``.

    Raises:
        CidError: malformed ``cid``.
        BlockMissing: not stored here nor (with ``source``) at any peer.
    """
    root = cid if isinstance(cid, CID) else CID.parse(cid)
    try:
        return await asyncio.to_thread(store.file_size, root)
    except (BlockMissing, BlockDamaged):
        if source is None:
            raise
    (block,) = await _get_blocks(store, [root], source)
    return decode_node(block).filesize if root.codec == DAG_PB else len(block)
