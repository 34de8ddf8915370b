"""The committed ledger on a ``KVStore``: blocks, state, head, with one synced batch per block.

A block, its state writes, its indexes and the new head pointer go into one
``WriteOps`` written with ``sync=True``: after a crash at any instant the store holds the
whole block or none of it. The store records its key-layout version and the genesis hash
and refuses to open a store made for another layout or another consortium.
"""

from __future__ import annotations

import struct
from typing import Any

from pienode.encoding import unpack
from pienode.errors import StorageError
from pienode.identity.genesis import Genesis
from pienode.ledger import keys
from pienode.ledger.block import Block, BlockHeader
from pienode.ledger.executor import Executor
from pienode.storage.kv import KVStore, WriteOps


class Ledger:
    def __init__(self, kv: KVStore, genesis: Genesis, executor: Executor | None = None) -> None:
        self.kv = kv
        self.genesis = genesis
        self.executor = executor or Executor(genesis, kv)
        layout = kv.get(keys.META_LAYOUT)
        if layout is None:
            self._init_genesis()
        else:
            if int(layout) != keys.LAYOUT_VERSION:
                raise StorageError(f"ledger key layout {int(layout)} is not {keys.LAYOUT_VERSION}; migrate first")
            if kv.get(keys.META_GENESIS) != genesis.hash():
                raise StorageError("this ledger belongs to another genesis")
        head = kv.get(keys.META_HEAD)
        if head is None:
            raise StorageError("ledger has no head")
        self._head = self._load_header(struct.unpack(">Q", head)[0])

    def _init_genesis(self) -> None:
        block, writes = self.executor.genesis_block()
        ops = WriteOps()
        ops.put(keys.META_LAYOUT, str(keys.LAYOUT_VERSION).encode())
        ops.put(keys.META_CHAIN, self.genesis.chain_id.encode())
        ops.put(keys.META_GENESIS, self.genesis.hash())
        self._add_block_ops(ops, block, writes)
        self.kv.write(ops, sync=True)
        self.executor.caches.state_written(writes)

    def _load_header(self, height: int) -> BlockHeader:
        blk = self.block(height)
        if blk is None:
            raise StorageError(f"head block {height} is missing")
        return blk.header

    @staticmethod
    def _add_block_ops(ops: WriteOps, block: Block, writes: dict[bytes, bytes | None]) -> None:
        ops.put(keys.block_key(block.height), block.encode())
        # Appended as they are (``WriteOps`` keeps (key, value or None for a delete)): state
        # keys and values are already exact bytes, ~10 per transaction on the commit path.
        state = keys.STATE
        ops.ops.extend([(state + k, v) for k, v in writes.items()])
        ops.put(keys.META_HEAD, struct.pack(">Q", block.height))

    # -- reads ---------------------------------------------------------------------------

    @property
    def head(self) -> BlockHeader:
        return self._head

    @property
    def height(self) -> int:
        return self._head.height

    def block(self, height: int) -> Block | None:
        raw = self.kv.get(keys.block_key(height))
        return None if raw is None else Block.decode(raw)

    def block_raw(self, height: int) -> bytes | None:
        return self.kv.get(keys.block_key(height))

    def state(self, key: bytes) -> Any:
        raw = self.kv.get(keys.STATE + key)
        return None if raw is None else unpack(raw)

    def tx_height(self, tx_id: bytes) -> int | None:
        v = self.state(keys.tx_key(tx_id))
        return None if v is None else int(v[0])

    # -- writes --------------------------------------------------------------------------

    def commit(self, block: Block, writes: dict[bytes, bytes | None], extra: WriteOps | None = None) -> None:
        """Append ``block`` atomically with its state writes (and ``extra`` ops, if any)."""
        if block.height != self._head.height + 1 or block.header.prev_hash != self._head.hash():
            raise StorageError(f"block {block.height} does not extend the head {self._head.height}")
        ops = extra if extra is not None else WriteOps()
        self._add_block_ops(ops, block, writes)
        self.kv.write(ops, sync=True)
        # After the write: a cache refilled from the store from now on reads the new state.
        self.executor.caches.state_written(writes)
        self._head = block.header
