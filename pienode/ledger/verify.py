"""``pienode verify``: an offline integrity check of a node's home.

It trusts nothing stored: it rebuilds the chain from genesis in memory, re-executing every
block and checking each one's encoding, hash chain, Merkle roots, state root and commit
certificate against the stored bytes; then it compares every stored state and index key
with the replayed state, checks every private-registry checksum and that the consensus
log decodes. Any flipped byte in any stored value shows up as an error.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pienode.encoding import unpack
from pienode.errors import PieError
from pienode.identity.genesis import Genesis
from pienode.identity.registry import decode_entry
from pienode.ledger import keys
from pienode.ledger.block import Block
from pienode.ledger.contracts import ContractHost
from pienode.ledger.executor import Executor
from pienode.ledger.store import Ledger
from pienode.storage.kv import KVStore, MemoryKV, open_kv

MAX_ERRORS = 100


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.checked_blocks = 0
        self.checked_state_keys = 0
        self.checked_chunks = 0
        self.height = 0

    def error(self, msg: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(msg)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.errors,
            "height": self.height,
            "errors": self.errors,
            "checked_blocks": self.checked_blocks,
            "checked_state_keys": self.checked_state_keys,
            "checked_chunks": self.checked_chunks,
        }


def verify_home(home: Path) -> dict[str, Any]:
    from pienode.runtime.config import load_config

    cfg = load_config(home, env={})
    genesis = Genesis.load(cfg.genesis_path)
    kv = open_kv(cfg.data_dir / "ledger")
    host = ContractHost(workers=1)
    try:
        report = verify_store(kv, genesis, host)
        _verify_files(cfg.data_dir / "files", kv, report)
    finally:
        kv.close()
        host.close()
    return report.to_json()


def _verify_files(directory: Path, kv: KVStore, report: Report) -> None:
    """Re-hash every stored chunk; every file a committed record points to must be whole
    here or be fetchable (a hospital may not hold every file yet: that is not damage)."""
    if not (directory / "index").exists():
        return
    from pienode.files.admin import verify as verify_chunks
    from pienode.files.store import PackStore

    store = PackStore(directory)
    try:
        files = verify_chunks(store)
    finally:
        store.close()
    report.checked_chunks = files.blocks_checked
    for cid in files.damaged:
        report.error(f"file store: chunk {cid} is damaged")
    for root in files.incomplete_roots:
        report.error(f"file store: file {root} is missing chunks")


def _check_certificate(block: Block, genesis: Genesis, report: Report) -> None:
    from pienode.consensus.certificate import decode_certificate, verify_certificate
    from pienode.consensus.messages import Batch
    from pienode.encoding import sha256
    from pienode.runtime.driver import make_verifier_for, replica_config_for

    h = block.height
    digest = sha256(Batch(timestamp_ms=block.header.timestamp_ms, requests=tuple(block.txs)).encode())
    if digest != block.header.batch_digest:
        report.error(f"block {h}: batch digest does not match its transactions")
        return
    try:
        cert = decode_certificate(block.certificate)
    except Exception:
        report.error(f"block {h}: commit certificate does not decode")
        return
    if cert.seq != h or cert.digest != digest:
        report.error(f"block {h}: commit certificate is for another batch")
    elif not verify_certificate(cert, replica_config_for(genesis), make_verifier_for(genesis), digest):
        report.error(f"block {h}: commit certificate lacks 2f+1 valid signatures")


def verify_store(kv: KVStore, genesis: Genesis, contracts: ContractHost | None = None) -> Report:
    report = Report()
    try:
        if kv.get(keys.META_LAYOUT) != str(keys.LAYOUT_VERSION).encode():
            report.error("meta: missing or unknown key-layout version")
        if kv.get(keys.META_GENESIS) != genesis.hash():
            report.error("meta: ledger was made for another genesis")
        if kv.get(keys.META_CHAIN) != genesis.chain_id.encode():
            report.error("meta: chain id does not match genesis")
        head_raw = kv.get(keys.META_HEAD)
        head = int.from_bytes(head_raw, "big") if head_raw and len(head_raw) == 8 else -1
        if head < 0:
            report.error("meta: missing head")
        report.height = max(head, 0)
        replay_kv = MemoryKV()
        replay = Ledger(replay_kv, genesis, Executor(genesis, replay_kv, contracts=contracts))
        stored0 = kv.get(keys.block_key(0))
        if stored0 != replay.block_raw(0):
            report.error("block 0: differs from the genesis block")
        report.checked_blocks = 1
        for h in range(1, head + 1):
            raw = kv.get(keys.block_key(h))
            if raw is None:
                report.error(f"block {h}: missing")
                break
            try:
                stored = Block.decode(raw)
            except PieError as exc:
                report.error(f"block {h}: does not decode ({exc.message})")
                break
            if stored.height != h:
                report.error(f"block {h}: stored under the wrong height")
                break
            _check_certificate(stored, genesis, report)
            try:
                mine, writes = replay.executor.execute(
                    replay.head, stored.txs, timestamp_ms=stored.header.timestamp_ms,
                    proposer=stored.header.proposer, view=stored.header.view,
                    batch_digest=stored.header.batch_digest,
                )
            except PieError as exc:
                report.error(f"block {h}: cannot be re-executed ({exc.message})")
                break
            mine = replace(mine, certificate=stored.certificate)
            if mine.encode() != raw:
                report.error(f"block {h}: {_diff(mine, stored)}")
            replay.commit(mine, writes)
            report.checked_blocks += 1
        _compare_state(kv, replay_kv, report)
        for k in _keys_beyond(kv, head):
            report.error(f"block key {k.hex()} lies beyond the head")
        _check_other(kv, report)
    except PieError as exc:
        report.error(f"verification stopped: {exc.message}")
    return report


def _diff(mine: Block, stored: Block) -> str:
    a, b = mine.header.to_dict(), stored.header.to_dict()
    fields = [k for k in a if a[k] != b[k]]
    if fields:
        return "header differs from re-execution in " + ", ".join(fields)
    if mine.txs != stored.txs:
        return "transactions were altered"
    if mine.receipts != stored.receipts:
        return "receipts differ from re-execution"
    return "stored bytes differ from the canonical encoding"


def _compare_state(kv: KVStore, replay_kv: KVStore, report: Report) -> None:
    stored = dict(kv.iterate(keys.STATE))
    replayed = dict(replay_kv.iterate(keys.STATE))
    report.checked_state_keys = len(stored)
    for k in sorted(set(stored) | set(replayed)):
        if k not in stored:
            report.error(f"state: key {k[1:]!r} missing")
        elif k not in replayed:
            report.error(f"state: unexpected key {k[1:]!r}")
        elif stored[k] != replayed[k]:
            report.error(f"state: value of {k[1:]!r} differs from replay")


def _keys_beyond(kv: KVStore, head: int) -> list[bytes]:
    return [k for k, _ in kv.iterate(keys.BLOCK) if keys.height_of_block_key(k) > head]


def _check_other(kv: KVStore, report: Report) -> None:
    for k, v in kv.iterate(keys.PRIVATE):
        try:
            decode_entry(v)
        except PieError:
            report.error(f"private registry: entry {k[1:]!r} fails its checksum")
    items = [(k[len(keys.CONSENSUS):], v) for k, v in kv.iterate(keys.CONSENSUS)]
    for k, v in items:
        try:
            unpack(v)
        except PieError:
            report.error(f"consensus log: entry {k!r} does not decode")
    known = (keys.META, keys.BLOCK, keys.STATE, keys.CONSENSUS, keys.PRIVATE)
    for k, _ in kv.iterate():
        if not k.startswith(known):
            report.error(f"unknown key {k[:40]!r}")
