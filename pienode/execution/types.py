"""The contract engine's vocabulary: code, call context, limits, results and the state port.

Owns the frozen records that cross the boundary between the node and the engine, and the
exceptions a contract can end with. Must never import the node, the ledger or plyvel: the
node implements ``StateView`` and hands it in.

Failure classes (the ``error`` string of a ``CallResult`` starts with one of them):

- deterministic, recorded alike on every node: ``StepLimitExceeded``, ``SizeLimitExceeded``,
  ``RecursionLimitExceeded``, ``SandboxViolation``, ``ContractFault``, ``ContractFailed``,
  ``ReadOnlyViolation``, ``BadArguments``, ``NoSuchFunction``, ``BadStateAccess``;
- node-local, never to be recorded as the contract's verdict: ``InternalError`` (worker
  timeout, worker crash, memory rlimit, CPU rlimit, IPC failure). ``CallResult.local_fault``
  is true for those, so the node can retry or stop instead of writing a receipt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pienode.errors import ContractError

#: Error classes that are a property of the call, identical on every node.
DETERMINISTIC_ERRORS = frozenset(
    {
        "StepLimitExceeded",
        "SizeLimitExceeded",
        "RecursionLimitExceeded",
        "SandboxViolation",
        "ContractFault",
        "ContractFailed",
        "ReadOnlyViolation",
        "BadArguments",
        "NoSuchFunction",
        "BadStateAccess",
    }
)


class ContractRefused(ContractError):
    """Source refused at deploy time; ``line`` and ``rule`` say where and why."""

    def __init__(self, message: str, *, line: int, rule: str) -> None:
        super().__init__(f"line {line}: {message} [rule: {rule}]", line=line, rule=rule)
        self.line = line
        self.rule = rule


@dataclass(frozen=True, slots=True)
class ContractCode:
    """A validated contract. ``code_hash`` is the sha256 hex of ``source``."""

    name: str
    source: str
    code_hash: str
    entry_points: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller's certified identity, as the identity module vouches for it."""

    user_id: str
    role: str
    security_level: str


@dataclass(frozen=True, slots=True)
class CallContext:
    caller: Caller
    height: int
    tx_id: str | None
    timestamp_ms: int
    contract: str


@dataclass(frozen=True, slots=True)
class Limits:
    """Budgets for one call. Everything except the last block is deterministic.

    ``steps`` is the metered budget (see ``pienode.execution.costs``); the size limits are
    checked before the work that would exceed them. ``wall_clock_s``, ``memory_bytes`` and
    ``cpu_s`` are the worker's last line of defence and report ``InternalError``.
    """

    steps: int = 5_000_000
    max_len: int = 1_000_000  # elements of a list or dict
    max_str_len: int = 256 * 1024  # characters of a str (state values are 64 KiB anyway)
    max_int_bits: int = 4096
    max_depth: int = 100  # nested contract calls
    max_value_bytes: int = 64 * 1024  # one packed state value
    max_result_bytes: int = 1024 * 1024  # packed return value
    max_events: int = 64
    max_writes: int = 1024
    max_key_len: int = 200
    # Node-local last line of defence (not deterministic; reported as InternalError).
    wall_clock_s: float = 10.0
    memory_bytes: int = 1024 * 1024 * 1024
    cpu_s: int = 30

    _WIRE = ("steps", "max_len", "max_str_len", "max_int_bits", "max_depth",
             "max_value_bytes", "max_result_bytes", "max_events", "max_writes", "max_key_len",
             "cpu_s")

    def to_wire(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._WIRE}

    @classmethod
    def from_wire(cls, w: dict[str, Any], base: "Limits | None" = None) -> "Limits":
        b = base or cls()
        kw = {k: int(w[k]) for k in cls._WIRE if k in w}
        return cls(**kw, wall_clock_s=b.wall_clock_s, memory_bytes=b.memory_bytes)


@dataclass(frozen=True, slots=True)
class CallResult:
    """Outcome of one call. ``writes`` are namespaced keys (see ``namespace_prefix``)."""

    ok: bool
    value: Any = None
    error: str | None = None
    steps: int = 0
    writes: tuple[tuple[bytes, bytes | None], ...] = ()
    events: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def error_class(self) -> str | None:
        return None if self.error is None else self.error.split(":", 1)[0]

    @property
    def local_fault(self) -> bool:
        """True when the failure is node-local (timeout, crash, rlimit): do not record it."""
        return self.error is not None and self.error_class not in DETERMINISTIC_ERRORS


class StateView(Protocol):
    """What the node lends the engine for one call (in the parent process).

    ``get``/``scan`` see only keys under this contract's ``namespace_prefix``: the engine
    builds every key it passes and checks the prefix before asking. ``record``/``index`` are
    read-only views of the ledger's records and their indexes ("patient", "hospital",
    "type", "summary:<field>").
    """

    def get(self, key: bytes) -> bytes | None: ...

    def scan(
        self, prefix: bytes, start_after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]: ...

    def record(self, record_id: str) -> dict[str, Any] | None: ...

    def index(self, name: str, value: str, after: str | None, limit: int) -> list[str]: ...


def namespace_prefix(contract: str) -> bytes:
    """Key prefix of a contract's state. Contract names cannot contain NUL, so no prefix of
    one contract is a prefix of another's."""
    return b"cs\x00" + contract.encode("ascii") + b"\x00"


@dataclass(slots=True)
class MemoryState:
    """A plain in-memory ``StateView`` for tests, benchmarks and tools."""

    data: dict[bytes, bytes] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    indexes: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def scan(
        self, prefix: bytes, start_after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        keys = sorted(k for k in self.data if k.startswith(prefix))
        if start_after is not None:
            keys = [k for k in keys if k > start_after]
        return [(k, self.data[k]) for k in keys[:limit]]

    def record(self, record_id: str) -> dict[str, Any] | None:
        return self.records.get(record_id)

    def index(self, name: str, value: str, after: str | None, limit: int) -> list[str]:
        import bisect

        ids = self.indexes.get(name, {}).get(value, [])  # kept sorted by add_record
        start = 0 if after is None else bisect.bisect_right(ids, after)
        return ids[start : start + limit]

    def apply(self, writes: tuple[tuple[bytes, bytes | None], ...]) -> None:
        for k, v in writes:
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v

    def add_record(self, rec: dict[str, Any]) -> None:
        """Store a record and index it the way the ledger does."""
        import bisect

        rid = rec["record_id"]
        self.records[rid] = rec
        keys = [("patient", rec.get("patient_id")), ("hospital", rec.get("hospital_id")),
                ("type", rec.get("data_type"))]
        for f, v in (rec.get("summary") or {}).items():
            keys.append((f"summary:{f}", v))
        for name, value in keys:
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                lst = self.indexes.setdefault(name, {}).setdefault(str(value), [])
                bisect.insort(lst, rid)
