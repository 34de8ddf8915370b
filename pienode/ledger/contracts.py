"""The ledger's side of contracts: the ``contract_call`` and ``deploy_contract`` kinds, the
``StateView`` lent to the engine, and read-only calls.

Deterministic failures of a contract (refusal, step or size budget, a fault in its code)
become failed receipts, alike on every node. A node-local failure (the worker's wall
clock, memory or CPU guard, a crashed worker) says nothing about the transaction, so it
is retried on a fresh worker and, if it persists, stops the node loudly rather than
recording a verdict the other hospitals would not record.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from pienode.errors import ContractError, InternalError, NotFound, ValidationError
from pienode.execution import CallContext, Caller, CallResult, ContractCode, ContractEngine, namespace_prefix, validate
from pienode.ledger import keys
from pienode.ledger.kinds import TxKind, TxRejected, register_kind
from pienode.ledger.state import StateOverlay
from pienode.ledger.tx import Transaction, require_fields

if TYPE_CHECKING:
    from pienode.ledger.executor import ExecContext

log = logging.getLogger("pienode.contracts")

LOCAL_FAULT_RETRIES = 2
#: Record fields a contract may see (no keys, capsules or sealed secrets).
RECORD_VIEW_FIELDS = (
    "record_id", "version", "patient_id", "physician_id", "hospital_id", "data_type", "security_level",
    "summary", "cid", "size", "policy", "created_at_ms", "updated_at_ms",
)
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class LedgerStateView:
    """The engine's ``StateView`` over a block's (or the committed) state."""

    def __init__(self, state: StateOverlay, contract: str) -> None:
        self.state = state
        self.prefix = namespace_prefix(contract)

    def _own(self, key: bytes) -> bytes:
        if not key.startswith(self.prefix):
            raise InternalError("engine asked for a key outside the contract's namespace")
        return key

    def get(self, key: bytes) -> bytes | None:
        return self.state.get_raw(self._own(key))

    def scan(self, prefix: bytes, start_after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        return self.state.scan_raw(self._own(prefix), start_after, limit)

    def record(self, record_id: str) -> dict[str, Any] | None:
        rec = self.state.get(keys.record_key(record_id))
        if rec is None:
            return None
        return {k: rec[k] for k in RECORD_VIEW_FIELDS if k in rec}

    def index(self, name: str, value: str, after: str | None, limit: int) -> list[str]:
        prefix = keys.index_prefix(name, value)
        start = prefix + after.encode() if after is not None else None
        return [k[len(prefix):].decode() for k, _ in self.state.scan_raw(prefix, start, limit)]


class ContractHost:
    """Owns the engine (a pool of sandboxed workers) and the cache of validated code."""

    def __init__(self, workers: int = 2) -> None:
        self.engine = ContractEngine(workers=workers)
        self._codes: dict[str, ContractCode] = {}
        self._lock = threading.Lock()
        self.steps = 0
        self.failures: dict[str, int] = {}

    @staticmethod
    def validate(source: str, name: str) -> ContractCode:
        """Raises ContractRefused (a ContractError naming line and rule)."""
        if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
            raise ValidationError("contract names are 1-64 characters of a-z, 0-9 and _")
        return validate(source, name)

    def code(self, state: StateOverlay, name: str) -> ContractCode:
        rec = state.get(keys.code_key(name))
        if rec is None:
            raise NotFound(f"no contract named {name!r}")
        with self._lock:
            cached = self._codes.get(rec["code_hash"])
        if cached is None or cached.name != name:
            cached = validate(rec["source"], name)
            with self._lock:
                self._codes[rec["code_hash"]] = cached
        return cached

    def call(self, state: StateOverlay, name: str, fn: str, args: dict[str, Any], ctx: CallContext,
             *, read_only: bool) -> CallResult:
        code = self.code(state, name)
        if fn not in code.entry_points:
            raise ValidationError(f"contract {name} has no entry point {fn!r}")
        view = LedgerStateView(state, name)
        for attempt in range(LOCAL_FAULT_RETRIES + 1):
            result = self.engine.call_sync(code, fn, args, ctx, view, read_only=read_only)
            if not result.local_fault:
                break
            log.warning("contract %s.%s hit a node-local limit (%s), attempt %d", name, fn, result.error, attempt + 1)
        self.steps += result.steps
        if not result.ok:
            self.failures[result.error_class or "?"] = self.failures.get(result.error_class or "?", 0) + 1
        return result

    def close(self) -> None:
        self.engine.stop_sync()


# -- transaction kinds --------------------------------------------------------------------


def _check_call(body: dict[str, Any]) -> None:
    require_fields(body, {"contract": (str, True), "fn": (str, True), "args": (dict, True)})
    if not body["fn"] or body["fn"].startswith("_") or len(body["fn"]) > 64:
        raise ValidationError("bad entry point name")


def _apply_call(ctx: "ExecContext", tx: Transaction) -> Any:
    host: ContractHost | None = ctx.contracts
    if host is None:
        raise InternalError("this executor has no contract engine")
    b = tx.body
    cert = ctx.sender_cert or {}
    call_ctx = CallContext(
        caller=Caller(tx.sender, cert.get("role", ""), cert.get("security_level", "low")),
        height=ctx.height,
        tx_id=tx.tx_id.hex(),
        timestamp_ms=ctx.block_timestamp_ms,
        contract=b["contract"],
    )
    try:
        result = host.call(ctx.state, b["contract"], b["fn"], b["args"], call_ctx, read_only=False)
    except (NotFound, ValidationError) as exc:
        raise TxRejected("bad_call", exc.message) from None
    if result.local_fault:
        raise InternalError(f"contract {b['contract']}.{b['fn']} failed locally: {result.error}")
    if not result.ok:
        raise TxRejected(result.error_class or "contract_failed", result.error or "contract failed")
    prefix = namespace_prefix(b["contract"])
    for k, v in result.writes:
        if not k.startswith(prefix):
            raise InternalError("engine returned a write outside the contract's namespace")
        ctx.state.put_raw(k, v)
    for name, data in result.events:
        ctx.emit(name, {"contract": b["contract"], **data})
    return result.value


def _check_deploy(body: dict[str, Any]) -> None:
    require_fields(body, {"name": (str, True), "source": (str, True), "version": (int, True)})
    if len(body["source"]) > 60_000:
        raise ValidationError("contract source larger than 60,000 characters")
    # Refuse at admission what the sandbox refuses: nothing reaches the ledger.
    ContractHost.validate(body["source"], body["name"])


def _apply_deploy(ctx: "ExecContext", tx: Transaction) -> Any:
    from pienode.ledger.executor import install_contract

    b = tx.body
    current = ctx.state.get(keys.code_key(b["name"]))
    if current is not None and b["version"] <= current["version"]:
        raise TxRejected("stale_version", f"contract {b['name']} is at version {current['version']}")
    try:
        install_contract(ctx, b["name"], b["source"], version=b["version"])
    except ContractError as exc:
        raise TxRejected("contract_refused", exc.message) from None
    ctx.emit("contract_deployed", {"name": b["name"], "version": b["version"]})
    return {"name": b["name"], "version": b["version"]}


register_kind(TxKind("contract_call", frozenset({"user"}), _check_call, _apply_call))
register_kind(TxKind("deploy_contract", frozenset({"consortium"}), _check_deploy, _apply_deploy))


def read_only_call(host: ContractHost, state: StateOverlay, name: str, fn: str, args: dict[str, Any],
                   caller: Caller, height: int, timestamp_ms: int) -> Any:
    """Answer a read-only call from committed state (one node answers).

    Raises:
        ContractError: the contract failed (its one-line error), NotFound, ValidationError.
    """
    ctx = CallContext(caller=caller, height=height, tx_id=None, timestamp_ms=timestamp_ms, contract=name)
    result = host.call(state, name, fn, args, ctx, read_only=True)
    if not result.ok:
        raise ContractError(result.error or "contract failed")
    return {"value": result.value, "steps": result.steps}
