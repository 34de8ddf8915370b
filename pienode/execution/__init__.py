"""The contract engine: validated, metered, isolated Python contracts.

Public surface (see each module for the rules it keeps):

- ``validate(source, name) -> ContractCode`` (deploy time, pure, deterministic);
- ``ContractEngine`` (a pool of worker processes): ``call`` (async) and ``call_sync``;
- ``run_call`` (same semantics in the current process: tests, tools, benchmarks);
- records: ``ContractCode``, ``CallContext``, ``Caller``, ``CallResult``, ``Limits``,
  ``StateView`` (the port the node implements), ``MemoryState``, ``namespace_prefix``.
"""

from pienode.execution.types import (
    DETERMINISTIC_ERRORS,
    CallContext,
    Caller,
    CallResult,
    ContractCode,
    ContractRefused,
    Limits,
    MemoryState,
    StateView,
    namespace_prefix,
)
from pienode.execution.validator import validate
from pienode.execution.interpreter import run_call
from pienode.execution.pool import ContractEngine
from pienode.execution.genesis import genesis_contracts

__all__ = [
    "DETERMINISTIC_ERRORS", "CallContext", "Caller", "CallResult", "ContractCode",
    "ContractRefused", "Limits", "MemoryState", "StateView", "namespace_prefix", "validate",
    "run_call", "ContractEngine", "genesis_contracts",
]
