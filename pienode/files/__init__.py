"""The built-in content-addressed file store (issue 4): IPFS-compatible CIDs, pack-file
storage, streaming ingest/read, HTTP routes and the peer block exchange.

The node uses: ``PackStore`` (open under HOME/files), ``add_file_routes`` (HTTP),
``BlockExchange`` (files channel 2 of the peer network) and ``ingest``/``read``/``stat``.
"""

from pienode.files.cid import CID, CidError, parse_cid
from pienode.files.exchange import BlockExchange, ExchangeConfig, ReplicationResult
from pienode.files.store import (
    BlockDamaged,
    BlockMissing,
    FileInfo,
    GcResult,
    PackStore,
    StoreStats,
)
from pienode.files.stream import BlockSource, ingest, read, stat

ChunkStore = PackStore  # the role name (STYLE.md) for the one implementation we have

__all__ = [
    "CID",
    "BlockDamaged",
    "BlockExchange",
    "BlockMissing",
    "BlockSource",
    "ChunkStore",
    "CidError",
    "ExchangeConfig",
    "FileInfo",
    "GcResult",
    "PackStore",
    "ReplicationResult",
    "StoreStats",
    "ingest",
    "parse_cid",
    "read",
    "stat",
]
