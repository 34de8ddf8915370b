"""Values crossing the sandbox boundary: JSON-like only, deep-copied, size-checked.

Owns ``export_value`` (contract -> outside: return values, state values, event data) and
``import_value`` (outside -> contract: call arguments, state values, ledger records). Must
never let a tuple, bytes, float or foreign object into a contract, nor let a shared or
cyclic structure out (an export is a tree, charged by its logical size).
"""

from __future__ import annotations

from typing import Any

from pienode.execution import runtime_tables as T
from pienode.execution.runtime import BadStateAccess, Runtime, SizeLimitExceeded


def export_value(rt: Runtime | None, value: Any, max_nodes: int = 2_000_000) -> Any:
    """Deep copy ``value`` as None/bool/int/str/list/dict-with-str-keys, charging ``rt``.

    Raises:
        BadStateAccess: a type that cannot leave the sandbox.
        SizeLimitExceeded: deeper than MAX_NESTING or more than ``max_nodes`` nodes.
    """
    count = 0
    if rt is not None and type(value) in (list, dict):
        rt.walk(value)  # prices shared or cyclic structure before copying it as a tree

    def conv(x: Any, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > max_nodes:
            raise SizeLimitExceeded(f"value has more than {max_nodes} elements")
        t = type(x)
        if t is str:
            if rt is not None and len(x) > T.CHARS_PER_STEP:
                rt.charge(len(x) // T.CHARS_PER_STEP)
            return x
        if x is None or t is bool or t is int:
            return x
        if depth >= T.MAX_NESTING:
            raise SizeLimitExceeded(f"value nests deeper than {T.MAX_NESTING}")
        if rt is not None:
            rt.charge(1 + len(x) if t in (list, tuple, dict) else 1)
        if t is list or t is tuple:
            return [conv(e, depth + 1) for e in x]
        if t is dict:
            out = {}
            for k, v in x.items():
                if type(k) is not str:
                    raise BadStateAccess("dict keys crossing the contract boundary must be str")
                out[k] = conv(v, depth + 1)
            return out
        raise BadStateAccess(f"a {t.__name__} value cannot cross the contract boundary")

    return conv(value, 0)


def import_value(value: Any) -> Any:
    """Copy an outside value into the contract world (tuples -> lists, bytes -> hex)."""

    def conv(x: Any, depth: int) -> Any:
        t = type(x)
        if x is None or t is bool or t is int or t is str:
            return x
        if depth >= T.MAX_NESTING:
            raise BadStateAccess("value nests too deeply")
        if t is list or t is tuple:
            return [conv(e, depth + 1) for e in x]
        if t is dict:
            return {str(k) if type(k) is not str else k: conv(v, depth + 1)
                    for k, v in x.items()}
        if t is bytes or t is bytearray:
            return bytes(x).hex()
        raise BadStateAccess(f"a {t.__name__} value cannot enter a contract")

    return conv(value, 0)
