"""Operator views of the file store: list, stat and verify (what ``pienode files`` prints).

Owns: whole-store checks that are too slow for the request path: re-hashing every stored
block and walking every root's DAG for missing blocks.

Must never: change the store (repair is the exchange's job, gc the store's), or print file
contents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pienode.files.cid import CID, DAG_PB, RAW
from pienode.files.dagpb import DagError, decode_node
from pienode.files.store import _LOC, BlockDamaged, BlockMissing, PackStore


@dataclass(frozen=True, slots=True)
class RootEntry:
    cid: str
    size: int
    added: float
    pinned: bool


@dataclass(slots=True)
class VerifyReport:
    """``ok`` is False if any stored block is damaged or any root lacks a block."""

    blocks_checked: int = 0
    bytes_checked: int = 0
    damaged: list[str] = field(default_factory=list)
    incomplete_roots: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.incomplete_roots

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "blocks_checked": self.blocks_checked,
            "bytes_checked": self.bytes_checked,
            "damaged": self.damaged,
            "incomplete_roots": self.incomplete_roots,
        }


def ls(store: PackStore) -> list[RootEntry]:
    """Every complete file stored here, oldest first."""
    pinned = set(store.pins())
    entries = [RootEntry(str(c), size, added, c in pinned) for c, size, added in store.roots()]
    return sorted(entries, key=lambda e: e.added)


def verify(store: PackStore) -> VerifyReport:
    """Re-hash every stored block and walk every root (blocking: run it in a thread).

    Damaged blocks are named by their raw-codec CID (the index keys blocks by digest).
    """
    report = VerifyReport()
    for key, value in list(store._kv.iterate(b"B")):
        cid = CID(RAW, key[1:])
        report.blocks_checked += 1
        report.bytes_checked += _LOC.unpack(value)[2]
        try:
            store.get_block(cid)
        except BlockDamaged:
            report.damaged.append(str(cid))
    for root, _size, _added in store.roots():
        if not _complete(store, root):
            report.incomplete_roots.append(str(root))
    return report


def is_complete(store: PackStore, root: CID) -> bool:
    """Whether every block of ``root``'s DAG is stored here (blocking)."""
    return _complete(store, root)


def _complete(store: PackStore, root: CID) -> bool:
    stack = [root]
    while stack:
        cid = stack.pop()
        if not store.has(cid):
            return False
        if cid.codec == DAG_PB:
            try:
                node = decode_node(store.get_block(cid))
            except (BlockDamaged, BlockMissing, DagError):
                return False
            stack.extend(link.cid for link in node.links)
    return True


class FileStoreCollector:
    """Prometheus collector of the store's counters; register it once:
    ``prometheus_client.REGISTRY.register(FileStoreCollector(lambda: store))``."""

    def __init__(self, store_getter: Callable[[], PackStore | None]) -> None:
        self._get = store_getter

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        store = self._get()
        if store is None:
            return
        st = store.stats()
        for name, doc, value in (
            ("pie_files_bytes_stored", "Bytes of live blocks in the file store", st.bytes_stored),
            ("pie_files_blocks", "Blocks in the file store", st.blocks),
            ("pie_files_roots", "Complete files stored here", st.roots),
            ("pie_files_pins", "Pinned files", st.pins),
            ("pie_files_pack_bytes", "Bytes of pack files on disk", st.pack_bytes),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        yield CounterMetricFamily(
            "pie_files_chunks_repaired", "Damaged blocks repaired from peers",
            value=st.chunks_repaired,
        )
        yield CounterMetricFamily(
            "pie_files_damaged_detected", "Damaged block reads detected since start",
            value=st.damaged_detected,
        )
