"""Deterministic block execution: a committed batch in, a block and its write set out.

Every node runs this on the same batch and must get byte-identical results, so nothing
here reads a clock, a random source, the local file store or any node-local setting: only
genesis, the committed state and the batch. A transaction that fails validation or that
its kind refuses gets a failed receipt and leaves no writes; the block still commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from pienode.encoding import pack
from pienode.errors import PieError
from pienode.identity.genesis import Genesis
from pienode.ledger import keys
from pienode.ledger.block import (
    Block,
    BlockHeader,
    Receipt,
    next_state_root,
    receipts_root,
    tx_root,
    ZERO_HASH,
)
from pienode.ledger.kinds import TxRejected
from pienode.ledger.state import StateOverlay
from pienode.ledger.tx import Transaction
from pienode.ledger.validation import CertCache, TxCaches, check_transaction
from pienode.storage.kv import KVStore

log = logging.getLogger(__name__)


class ContractRunner(Protocol):
    """What the executor needs from the contract engine (issue 5)."""

    def deploy_writes(self, state: StateOverlay, name: str, source: str, version: int, height: int) -> None: ...


@dataclass
class ExecContext:
    genesis: Genesis
    state: StateOverlay
    height: int
    block_timestamp_ms: int
    tx: Transaction | None = None
    tx_id: bytes = b""
    sender_cert: dict[str, Any] | None = None
    events: list[tuple[str, Any]] = field(default_factory=list)
    contracts: Any = None
    certs: CertCache | None = None

    def emit(self, name: str, data: Any) -> None:
        self.events.append((name, data))

    def user_cert(self, user_id: str) -> dict[str, Any] | None:
        """A registered user's certificate as this block's state has it (a copy)."""
        if self.certs is None:
            cert: dict[str, Any] | None = self.state.get(keys.user_key(user_id))
            return cert
        found = self.certs.lookup(self.state, user_id)
        return None if found is None else found[0]


class Executor:
    def __init__(self, genesis: Genesis, kv: KVStore, *, contracts: Any = None, caches: TxCaches | None = None):
        self.genesis = genesis
        self.kv = kv
        self.contracts = contracts
        #: Shared with the node's admission, so what it decoded and verified is not redone.
        self.caches = caches or TxCaches()

    def genesis_block(self) -> tuple[Block, dict[bytes, bytes | None]]:
        """Height 0: no transactions; state holds the contracts genesis deploys."""
        state = StateOverlay(self.kv)
        ctx = ExecContext(self.genesis, state, 0, self.genesis.created_at_ms, contracts=self.contracts)
        for c in self.genesis.contracts:
            install_contract(ctx, c.name, c.source, version=1)
        header = BlockHeader(
            chain_id=self.genesis.chain_id,
            height=0,
            prev_hash=ZERO_HASH,
            timestamp_ms=self.genesis.created_at_ms,
            proposer="genesis",
            view=0,
            batch_digest=self.genesis.hash(),
            tx_root=tx_root([]),
            receipts_root=receipts_root([]),
            state_root=next_state_root(ZERO_HASH, state.writes),
            tx_count=0,
        )
        return Block(header, (), ()), state.writes

    def execute(
        self,
        prev: BlockHeader,
        txs: tuple[bytes, ...],
        *,
        timestamp_ms: int,
        proposer: str,
        view: int,
        batch_digest: bytes,
    ) -> tuple[Block, dict[bytes, bytes | None]]:
        height = prev.height + 1
        state = StateOverlay(self.kv)
        # Every transaction of the block gets the same replay marker: encode it once.
        marker = pack([height])
        receipts = [self._execute_tx(state, data, height, timestamp_ms, marker) for data in txs]
        header = BlockHeader(
            chain_id=self.genesis.chain_id,
            height=height,
            prev_hash=prev.hash(),
            timestamp_ms=timestamp_ms,
            proposer=proposer,
            view=view,
            batch_digest=batch_digest,
            tx_root=tx_root(txs),
            receipts_root=receipts_root(receipts),
            state_root=next_state_root(prev.state_root, state.writes),
            tx_count=len(txs),
        )
        return Block(header, tuple(txs), tuple(receipts)), state.writes

    def _execute_tx(self, state: StateOverlay, data: bytes, height: int, ts: int, marker: bytes) -> Receipt:
        from pienode.encoding import sha256

        try:
            checked = check_transaction(data, genesis=self.genesis, state=state, now_ms=ts, caches=self.caches,
                                        executing=True)
        except PieError as exc:
            # Not attributable to a valid sender: no replay marker, only a failed receipt.
            return Receipt(sha256(data), False, "invalid", exc.message)
        ctx = ExecContext(
            self.genesis, state, height, ts, checked.tx, checked.tx_id, checked.sender_cert, contracts=self.contracts,
            certs=self.caches.certs,
        )
        state.savepoint()
        try:
            result = checked.kind.apply(ctx, checked.tx)
        except TxRejected as exc:
            state.rollback()
            receipt = Receipt(checked.tx_id, False, exc.code, exc.message)
        except PieError as exc:
            state.rollback()
            receipt = Receipt(checked.tx_id, False, "rejected", exc.message)
        else:
            state.release()
            receipt = Receipt(checked.tx_id, True, "ok", "", result, tuple(ctx.events))
        state.put_raw(keys.tx_key(checked.tx_id), marker)
        return receipt


def install_contract(ctx: ExecContext, name: str, source: str, *, version: int) -> None:
    """Store contract code in state (validated by the engine when one is attached)."""
    from pienode.encoding import sha256

    if ctx.contracts is not None:
        ctx.contracts.validate(source, name)
    ctx.state.put(
        keys.code_key(name),
        {"name": name, "source": source, "code_hash": sha256(source.encode()).hex(), "version": version,
         "deployed_at": ctx.height},
    )


# The contract kinds register themselves with the executor's kind table.
from pienode.ledger import contracts as _contract_kinds  # noqa: E402,F401
from pienode.ledger import sharing as _sharing_kinds  # noqa: E402,F401
