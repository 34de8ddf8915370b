"""The streaming balanced-DAG builder: file bytes in, IPFS blocks and the root CID out.

Owns: the shape of a file's DAG as ``ipfs add --cid-version=1`` (kubo's balanced layout,
raw leaves of 262,144 bytes, at most 174 links per node) builds it, computed in one pass.

Shape (go-unixfs ``balanced.Layout``): a file of one chunk is its raw leaf; an empty file is
the raw leaf of no bytes; otherwise the root has the least height ``d`` with
``174**d >= leaves``, every internal node of height ``h`` has children of height ``h-1``,
all full except the last, which keeps the full height even when it holds a single leaf.
Built bottom-up: level ``h`` keeps the links of the open node of height ``h+1``; a node is
emitted as soon as it has 174 links, and the open nodes are closed from the bottom at the
end. So the builder holds at most ``depth * 174`` small link records, never file data.

Must never: keep a leaf's bytes after hashing it, or do I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pienode.buffers import scratch
from pienode.files.cid import CID, DAG_PB, RAW
from pienode.files.dagpb import MAX_LINKS, Link, encode_node

CHUNK_SIZE = 262_144

Block = tuple[CID, bytes]


class DagBuilder:
    """Feed leaves in file order with ``add_leaf``; ``finish`` gives the root.

    Each call returns the internal blocks that became final, in an order where every
    child precedes its parent, so a store that writes them in order never holds a parent
    whose children are missing.
    """

    __slots__ = ("_levels", "_leaves", "_size", "_max_links", "_done")

    def __init__(self, max_links: int = MAX_LINKS) -> None:
        self._levels: list[list[Link]] = [[]]
        self._leaves = 0
        self._size = 0
        self._max_links = max_links
        self._done = False

    @property
    def size(self) -> int:
        """File bytes fed so far."""
        return self._size

    def add_leaf(self, data: bytes | memoryview) -> tuple[CID, list[Block]]:
        """Hash one leaf (1..CHUNK_SIZE bytes); returns its CID and any internal nodes
        that its arrival completed."""
        if self._done:
            raise RuntimeError("builder already finished")
        n = len(data)
        if not 0 < n <= CHUNK_SIZE:
            raise ValueError("a leaf holds 1..262144 bytes")
        cid = CID(RAW, hashlib.sha256(data).digest())
        return cid, self.add_leaf_cid(cid, n)

    def add_leaf_cid(self, cid: CID, length: int) -> list[Block]:
        """Like ``add_leaf`` when the caller already hashed the leaf (for instance in a
        worker thread)."""
        if self._done:
            raise RuntimeError("builder already finished")
        self._leaves += 1
        self._size += length
        self._levels[0].append(Link(cid, length, length))
        out: list[Block] = []
        h = 0
        while len(self._levels[h]) == self._max_links:
            out.append(self._close(h))
            h += 1
        return out

    def _close(self, h: int) -> Block:
        """Close the open node at level ``h`` into a block and link it one level up."""
        links = self._levels[h]
        block = encode_node(links)
        cid = CID(DAG_PB, hashlib.sha256(block).digest())
        tsize = len(block) + sum(link.tsize for link in links)
        filesize = sum(link.filesize for link in links)
        self._levels[h] = []
        if len(self._levels) == h + 1:
            self._levels.append([])
        self._levels[h + 1].append(Link(cid, tsize, filesize))
        return cid, block

    def finish(self) -> tuple[CID, int, list[Block]]:
        """Close the DAG. Returns (root CID, file size, the last internal blocks).

        With no leaf at all the root is the raw leaf of no bytes, which the caller must
        store itself (it is returned among the blocks for that reason).
        """
        if self._done:
            raise RuntimeError("builder already finished")
        self._done = True
        if self._leaves == 0:
            empty = CID(RAW, hashlib.sha256(b"").digest())
            return empty, 0, [(empty, b"")]
        depth = 0
        while self._max_links**depth < self._leaves:
            depth += 1
        out: list[Block] = []
        for h in range(depth):
            if self._levels[h]:
                out.append(self._close(h))
        top = self._levels[depth]
        if len(top) != 1 or any(self._levels[h] for h in range(depth)):
            raise AssertionError("balanced DAG did not close to one root")
        return top[0].cid, self._size, out


class Rechunker:
    """Turns an arbitrary sequence of byte strings into CHUNK_SIZE pieces (the last one
    shorter), holding less than one chunk between calls.

    Every byte is copied at most once: a chunk that lies wholly inside a piece is a view of
    it, and one that straddles pieces is filled in a buffer of its own (``scratch``) that it
    then becomes. HTTP bodies arrive in pieces of the socket's read size, not aligned to
    chunks, so most chunks straddle; joining and re-slicing them cost a 1 GiB upload two
    extra copies (issue 7).
    """

    __slots__ = ("_leaf", "_fill", "_size")

    def __init__(self, size: int = CHUNK_SIZE) -> None:
        self._leaf: bytearray | None = None  # the straddling chunk being filled
        self._fill = 0
        self._size = size

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | bytearray | memoryview]:
        """Whole chunks completed by ``data``. Chunks that lie wholly inside ``data`` are
        returned as memoryviews of it (no copy), so ``data`` must not change afterwards."""
        view = memoryview(data)
        out: list[bytes | bytearray | memoryview] = []
        size = self._size
        if self._leaf is not None:
            take = min(size - self._fill, len(view))
            self._leaf[self._fill:self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill < size:
                return out
            out.append(self._leaf)
            self._leaf, self._fill = None, 0
        while len(view) >= size:
            out.append(view[:size])
            view = view[size:]
        if len(view):
            self._leaf = scratch(size)  # written up to _fill before anything reads it
            self._leaf[:len(view)] = view
            self._fill = len(view)
        return out

    def flush(self) -> bytes | None:
        if self._leaf is None:
            return None
        tail = bytes(memoryview(self._leaf)[:self._fill])
        self._leaf, self._fill = None, 0
        return tail


def file_cid(pieces: Iterable[bytes]) -> tuple[CID, int]:
    """The CID and size of the bytes in ``pieces`` (any split), without storing them."""
    chunker = Rechunker()
    builder = DagBuilder()
    for piece in pieces:
        for chunk in chunker.feed(piece):
            builder.add_leaf(chunk)
    tail = chunker.flush()
    if tail is not None:
        builder.add_leaf(tail)
    cid, size, _ = builder.finish()
    return cid, size


def cid_of_bytes(data: bytes) -> CID:
    """The CID ``ipfs add --cid-version=1`` gives ``data``."""
    return file_cid([data])[0]
