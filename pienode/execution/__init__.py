"""The contract engine: validated, metered, isolated Python contracts.

Public surface (see each module for the rules it keeps):

- ``validate(source, name) -> ContractCode`` (deploy time, pure, deterministic; raises
  ``ContractRefused`` with ``.line`` and ``.rule``);
- ``ContractEngine`` (a pool of worker processes): ``await call(...)`` and ``call_sync(...)``;
- ``run_call`` (same semantics in the current process: tests, tools, benchmarks);
- ``genesis_contracts()`` (the validated ``contracts/*.py``);
- records: ``ContractCode``, ``CallContext``, ``Caller``, ``CallResult``, ``Limits``,
  ``StateView`` (the port the node implements), ``MemoryState``, ``namespace_prefix``.

How a call stays deterministic (same value, error, steps and writes on every node):

1. the validator admits a subset with no floats, sets, tuples-as-values, identity, imports,
   introspection or underscore names (``validator``);
2. the instrumenter charges every function entry, loop iteration and comprehension element
   the static number of syntax nodes it evaluates, and routes every operation whose C-level
   work is not constant through a helper that prices it *before* doing it (``instrument``,
   ``runtime``, ``builtins``, ``methods``); containers compared, converted or exported are
   priced by their logical size, memoised, so shared or cyclic structure cannot hide
   exponential work;
3. size limits (list/dict elements, str characters, int bits, state value, result, events,
   writes) are checked before the work that would exceed them;
4. workers run with PYTHONHASHSEED=0 and a pinned int-digit limit; dict order is insertion
   order; nothing reads a clock, randomness or the environment.

The step budget and the size limits trip first in every realistic case (the calibration
benchmark keeps real time per step within a small band, so 5M steps is ~0.2-1.5 s of
work); the wall-clock guard and the CPU and address-space rlimits of the workers are the
last line of defence, and their failures are ``InternalError`` (``CallResult.local_fault``):
node-local, never to be recorded as the contract's verdict.
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
