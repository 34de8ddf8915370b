"""Garbage collection of the pack store: mark from live roots, sweep the index, compact packs.

Owns: deciding which blocks are garbage and reclaiming their disk space.

Live roots: the CIDs the caller says committed records reference, pinned CIDs, roots added
within the grace period (an upload precedes the transaction that references it), roots
whose fetch is under way, and blocks that writers in flight deduplicated against. A block
is live if a live root's DAG reaches it.

Must never: drop a block a live root reaches. If a live DAG cannot be walked because one of
its internal nodes is damaged, nothing is deleted (the node must repair first).
Runs under the store's lock: commits wait while it runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pienode.errors import FileStoreError
from pienode.files.cid import CID, DAG_PB
from pienode.files.dagpb import decode_node
from pienode.storage.kv import WriteOps

if TYPE_CHECKING:
    from pienode.files.store import GcResult, PackStore


def _mark(store: "PackStore", roots: Iterable[CID], live: set[bytes]) -> None:
    from pienode.files.store import BlockDamaged, BlockMissing

    stack = list(roots)
    while stack:
        cid = stack.pop()
        if cid.digest in live:
            continue
        live.add(cid.digest)
        if cid.codec != DAG_PB:
            continue
        try:
            node = decode_node(store.get_block(cid))
        except BlockMissing:
            continue  # a partial copy: what we hold of it stays
        except (BlockDamaged, FileStoreError) as exc:
            raise FileStoreError(
                "gc refused: a live DAG node is damaged; repair it first", cid=str(cid)
            ) from exc
        stack.extend(link.cid for link in node.links)


def collect(
    store: "PackStore",
    referenced: Iterable[str | CID],
    *,
    grace_seconds: float,
    compact_below: float,
) -> "GcResult":
    from pienode.files.store import _LOC, _U64, GcResult, _pack_name

    wanted = {c if isinstance(c, CID) else CID.parse(c) for c in referenced}
    kv = store._kv
    now = time.time()
    with store._lock:
        # Readers that looked up a pack the previous gc dropped have long finished.
        for fd in store._retired_fds:
            os.close(fd)
        store._retired_fds.clear()
        keep_roots = set(wanted) | set(store.pins()) | set(store._protected)
        drop_roots: list[CID] = []
        for cid, _size, added in store.roots():
            if cid in keep_roots or now - added < grace_seconds:
                keep_roots.add(cid)
            else:
                drop_roots.append(cid)
        live: set[bytes] = set(store._claims)
        _mark(store, keep_roots, live)

        ops = WriteOps()
        removed = removed_bytes = 0
        pack_live: dict[int, list[tuple[bytes, int, int]]] = {}
        for key, value in kv.iterate(b"B"):
            pack, off, n = _LOC.unpack(value)
            d = key[1:]
            if d in live:
                pack_live.setdefault(pack, []).append((d, off, n))
            else:
                ops.delete(key)
                removed += 1
                removed_bytes += n
        for cid in drop_roots:
            ops.delete(b"R" + cid.to_bytes())
        kv.write(ops, sync=True)
        store._blocks -= removed
        store._bytes -= removed_bytes

        deleted = compacted = 0
        committed = {_U64.unpack(k[1:])[0]: _U64.unpack(v)[0] for k, v in kv.iterate(b"S")}
        for pack, length in committed.items():
            if pack in store._busy:
                continue
            blocks = pack_live.get(pack, [])
            live_bytes = sum(n for _, _, n in blocks)
            if blocks and (length == 0 or live_bytes / length >= compact_below):
                continue
            _leave_pool(store, pack)  # so the compaction writer cannot pick this very pack
            if blocks:
                if not _move(store, blocks):
                    continue  # a damaged live block: keep the pack until it is repaired
                compacted += 1
            else:
                deleted += 1
            kv.delete(b"S" + _U64.pack(pack), sync=True)
            _drop_pack_file(store, pack, _pack_name(pack))
        return GcResult(removed, removed_bytes, deleted, compacted, len(drop_roots))


def _move(store: "PackStore", blocks: list[tuple[bytes, int, int]]) -> bool:
    """Copy a pack's live blocks (verified) into another pack and repoint the index.
    Returns False, changing nothing, if one of them is damaged."""
    from pienode.files.cid import RAW
    from pienode.files.store import BlockDamaged

    w = store.writer(fresh=True)
    try:
        for d, _off, n in sorted(blocks, key=lambda b: b[1]):
            # The codec does not matter to the pack: both CIDs share the digest.
            cid = CID(RAW, d)
            try:
                data = store.get_block(cid)
            except BlockDamaged:
                return False
            w.put(cid, data, force=True)
        w.commit()
    finally:
        w.abort()
    return True


def _leave_pool(store: "PackStore", pack: int) -> None:
    for i, (p, fd, _len) in enumerate(store._pool):
        if p == pack:
            os.close(fd)
            del store._pool[i]
            return


def _drop_pack_file(store: "PackStore", pack: int, name: str) -> None:
    rfd = store._read_fds.pop(pack, None)
    if rfd is not None:
        # A reader may be inside pread on it right now; close it on a later gc or close().
        store._retired_fds.append(rfd)
    try:
        (store._packs_dir / name).unlink()
    except FileNotFoundError:
        pass
