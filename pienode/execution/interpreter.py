"""Run one contract call in the current process: compile (cached), meter, map the outcome.

Owns the translation of everything a call can end with into a ``CallResult`` whose error is
one deterministic line. Used by the worker process (the production path) and directly by
tests and benchmarks. Must never be the isolation boundary by itself: in the node it runs
only inside a worker (see ``pool``), because CPython cannot contain hostile code in-process.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from types import CodeType, TracebackType
from typing import Any

from pienode.encoding import pack
from pienode.errors import EncodingError
from pienode.execution.ctx import Ctx
from pienode.execution.instrument import compile_source
from pienode.execution.runtime import Abort, Runtime, StepLimitExceeded
from pienode.execution.types import (
    CallContext,
    CallResult,
    ContractCode,
    ContractRefused,
    Limits,
    StateView,
    namespace_prefix,
)
from pienode.execution.values import export_value, import_value

_CACHE: "OrderedDict[tuple[str, str], tuple[CodeType, tuple[str, ...]]]" = OrderedDict()
_CACHE_SIZE = 128
_CO_VARKEYWORDS = 0x08
_LOCAL = threading.local()


def _runtime(limits: Limits) -> Runtime:
    """This thread's Runtime, reset for a new call (building one costs ~40 us)."""
    rt = getattr(_LOCAL, "rt", None)
    if rt is None:
        rt = _LOCAL.rt = Runtime(limits)
    else:
        rt.reset(limits)
    return rt


def _module_fn(rt: Runtime, name: str, code_hash: str, compiled: CodeType) -> Any:
    # A contract cannot write module globals (no 'global'; its top-level names are locals
    # of _module), so the exec'd namespace can be reused across calls.
    key = (code_hash, name)
    fn = rt.modules.get(key)
    if fn is None:
        g: dict[str, Any] = {"__builtins__": rt.builtins}
        exec(compiled, g)
        fn = g["_module"]
        if len(rt.modules) > _CACHE_SIZE:
            rt.modules.clear()
        rt.modules[key] = fn
    return fn


def get_compiled(name: str, source: str, code_hash: str) -> tuple[CodeType, tuple[str, ...]]:
    key = (code_hash, name)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    hit = compile_source(source, name)
    _CACHE[key] = hit
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return hit


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _contract_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _fault_text(exc: BaseException) -> str:
    """A native exception's message, only when built from scalars (no object reprs)."""
    if all(type(a) in (str, int, bool, type(None)) for a in exc.args):
        return _one_line(str(exc), 120)
    return ""


def _frame_depth() -> int:
    f: Any = sys._getframe()
    n = 0
    while f is not None:
        n += 1
        f = f.f_back
    return n


def _check_args(fn: Any, name: str, args: dict[str, Any]) -> str | None:
    co = fn.__code__
    pos = co.co_varnames[1: co.co_argcount]
    kwonly = co.co_varnames[co.co_argcount: co.co_argcount + co.co_kwonlyargcount]
    ndef = len(fn.__defaults__ or ())
    required = list(pos[: len(pos) - ndef] if ndef else pos)
    kwdefs = fn.__kwdefaults__ or {}
    required += [k for k in kwonly if k not in kwdefs]
    for k in required:
        if k not in args:
            return f"{name}() missing argument '{k}'"
    if not co.co_flags & _CO_VARKEYWORDS:
        known = set(pos) | set(kwonly)
        for k in args:
            if k not in known:
                return f"{name}() got an unexpected argument '{_one_line(k, 40)}'"
    return None


def run_call(
    code: ContractCode,
    fn: str,
    kwargs: dict[str, Any],
    call: CallContext,
    state: StateView,
    *,
    read_only: bool,
    limits: Limits = Limits(),
) -> CallResult:
    """Execute ``code.fn(ctx, **kwargs)`` metered, in this process."""
    try:
        compiled, entries = get_compiled(code.name, code.source, code.code_hash)
    except ContractRefused as exc:
        return CallResult(False, error=_one_line(f"SandboxViolation: refused code: {exc}"))
    if fn not in entries:
        return CallResult(False, error=f"NoSuchFunction: {_one_line(fn, 64)!r} is not an "
                          f"entry point of {code.name}")
    if type(kwargs) is not dict or any(type(k) is not str for k in kwargs):
        return CallResult(False, error="BadArguments: arguments must be a map with str keys")
    try:
        args = import_value(export_value(None, kwargs, max_nodes=100_000))
    except Abort as exc:
        return CallResult(False, error=_one_line(f"BadArguments: {exc.message}"))

    rt = _runtime(limits)
    filename = f"<contract:{code.name}>"
    old_limit = sys.getrecursionlimit()
    sys.set_int_max_str_digits(4300)  # pinned: PYTHONINTMAXSTRDIGITS must not vary results
    sys.setrecursionlimit(_frame_depth() + 3 * limits.max_depth + 60)
    try:
        fns = _module_fn(rt, code.name, code.code_hash, compiled)(rt)
        f = fns[fn]
        bad = _check_args(f, fn, args)
        if bad is not None:
            return CallResult(False, error=_one_line("BadArguments: " + bad))
        ctx = Ctx(rt, call, state, namespace_prefix(code.name), read_only)
        value = f(ctx, **args)
        out = export_value(rt, value)
        try:
            size = len(pack(out))
        except EncodingError as exc:
            return CallResult(False, error=_one_line(f"BadStateAccess: result: {exc.message}"),
                              steps=rt.used())
        if size > limits.max_result_bytes:
            return CallResult(False, error=f"SizeLimitExceeded: result of {size} bytes exceeds "
                              f"{limits.max_result_bytes}", steps=rt.used())
        if rt.remaining() < 0:  # exhaustion swallowed somewhere in C: still exhaustion
            raise StepLimitExceeded(f"step budget of {limits.steps} exhausted")
        return CallResult(True, value=out, steps=rt.used(), writes=ctx.take_writes(),
                          events=ctx.take_events())
    except Abort as exc:
        sys.setrecursionlimit(old_limit)
        line = _contract_line(exc.__traceback__, filename)
        where = f" at line {line}" if line is not None and exc.kind != "ContractFailed" else ""
        steps = limits.steps if isinstance(exc, StepLimitExceeded) else rt.used()
        return CallResult(False, error=_one_line(f"{exc.kind}: {exc.message}{where}", 300),
                          steps=steps)
    except RecursionError as exc:
        sys.setrecursionlimit(old_limit)
        line = _contract_line(exc.__traceback__, filename)
        return CallResult(False, error=f"RecursionLimitExceeded: calls nested deeper than "
                          f"allowed at line {line}", steps=rt.used())
    except MemoryError:
        return CallResult(False, error="InternalError: MemoryError in worker", steps=rt.used())
    except (ImportError, OSError) as exc:
        # A contract can neither import nor do I/O: this is our environment failing.
        return CallResult(False, error=f"InternalError: {type(exc).__name__} in worker",
                          steps=rt.used())
    except Exception as exc:  # a fault of the contract's own making
        sys.setrecursionlimit(old_limit)
        line = _contract_line(exc.__traceback__, filename)
        msg = _fault_text(exc)
        text = f"ContractFault: {type(exc).__name__} at line {line}" + (
            f" ({msg})" if msg else "")
        return CallResult(False, error=_one_line(text, 300), steps=rt.used())
    finally:
        sys.setrecursionlimit(old_limit)
