"""The curated builtins a contract sees, each charging for its work before doing it.

Owns the contract's ``__builtins__``. Must never hand out an introspective or effectful
builtin (type, getattr, open, print, id, hash, iter, ...) or a type object whose attributes
lead elsewhere: the constructor names (``str``, ``int``, ``list``...) are metered functions;
``isinstance`` maps them back to the real types.
"""

from __future__ import annotations

import math
from typing import Any

from pienode.execution import runtime_tables as T
from pienode.execution.runtime import Runtime, SandboxViolation, SizeLimitExceeded

_CH = T.CHARS_PER_STEP


def _log2(n: int) -> int:
    return max(1, math.ceil(math.log2(n + 1)))


def sort_list(rt: Runtime, items: list[Any], key: Any = None, reverse: Any = False) -> None:
    """Sort ``items`` in place, charging for the keys' comparisons up front."""
    n = len(items)
    if key is not None:
        keys = [key(e) for e in items]  # key calls are metered themselves
        rt.charge(n)
    else:
        keys = items
    cost = sum(rt._elem_cost(k) for k in keys) * _log2(n)
    rt.charge(cost + 1)
    if key is None:
        items.sort(reverse=bool(reverse))
    else:
        it = iter(keys)  # list.sort calls key once per element, in order
        items.sort(key=lambda _e: next(it), reverse=bool(reverse))


def make_builtins(rt: Runtime) -> dict[str, Any]:
    to_list = rt.to_list

    def b_str(x: Any = "") -> str:
        return rt.to_str(x)

    def b_repr(x: Any) -> str:
        return rt.repr_(x)

    def b_int(x: Any = 0, base: Any = None) -> int:
        if type(x) is str:
            # Bound the text before parsing: the interpreter's own digit limit is an
            # environment setting that could differ between nodes.
            if len(x) > 4400:
                raise SizeLimitExceeded(f"integer text of {len(x)} characters")
            rt.charge(1 + (len(x) // 19) ** 2 // 4)  # parsing is quadratic in the digits
            r = int(x) if base is None else int(x, base)
        elif type(x) in (int, bool):
            if base is not None:
                raise TypeError("int() can't convert non-string with explicit base")
            r = int(x)
        else:
            raise TypeError("int() argument must be a string or an integer")
        return rt.check_int(r)

    def b_bool(x: Any = False) -> bool:
        return bool(x)

    def b_list(x: Any = None) -> list[Any]:
        return [] if x is None else to_list(x)

    def b_dict(x: Any = None, **kw: Any) -> dict[str, Any]:
        out: dict[Any, Any] = {}
        if x is not None:
            if type(x) is dict:
                rt.charge(len(x) + 1)
                out = dict(x)
            else:
                pairs = to_list(x)
                for p in pairs:
                    if type(p) is not list or len(p) != 2:
                        raise TypeError("dict() needs a dict or a list of [key, value] pairs")
                    out[p[0]] = p[1]
        if kw:
            rt.charge(len(kw))
            out.update(kw)
        return out

    def b_sorted(x: Any, key: Any = None, reverse: Any = False) -> list[Any]:
        items = to_list(x)
        sort_list(rt, items, key, reverse)
        return items

    def _pick(fn: Any, args: tuple[Any, ...], key: Any, default: Any) -> Any:
        items = to_list(args[0]) if len(args) == 1 else list(args)
        if not items:
            if default is not _MISSING:
                return default
            raise ValueError(f"{fn.__name__}() arg is an empty sequence")
        keys = items if key is None else [key(e) for e in items]
        rt.charge(sum(rt._elem_cost(k) for k in keys) + 1)
        if key is None:
            return fn(items)
        return items[fn(range(len(items)), key=keys.__getitem__)]

    def b_min(*args: Any, key: Any = None, default: Any = _MISSING) -> Any:
        if not args:
            raise TypeError("min expected at least 1 argument")
        return _pick(min, args, key, default)

    def b_max(*args: Any, key: Any = None, default: Any = _MISSING) -> Any:
        if not args:
            raise TypeError("max expected at least 1 argument")
        return _pick(max, args, key, default)

    def b_sum(x: Any, start: Any = 0) -> int:
        items = to_list(x)
        total = start
        for e in items:
            if type(e) not in (int, bool):
                raise TypeError("sum() adds integers only")
        if type(start) not in (int, bool):
            raise TypeError("sum() start must be an integer")
        rt.charge(len(items))
        total = sum(items, start)
        return rt.check_int(total)

    def b_reversed(x: Any) -> list[Any]:
        items = to_list(x)
        items.reverse()
        return items

    def b_enumerate(x: Any, start: Any = 0) -> list[list[Any]]:
        items = to_list(x)
        rt.charge(len(items))
        return [[i, e] for i, e in enumerate(items, start)]

    def b_zip(*xs: Any) -> list[list[Any]]:
        lists = [to_list(x) for x in xs]
        n = min((len(x) for x in lists), default=0)
        rt.charge(n * (len(lists) + 1))
        return [list(t) for t in zip(*lists)]

    def b_any(x: Any) -> bool:
        return any(to_list(x))

    def b_all(x: Any) -> bool:
        return all(to_list(x))

    def b_isinstance(x: Any, types: Any) -> bool:
        ts = types if type(types) is list else [types]
        rt.charge(len(ts))
        real = []
        for t in ts:
            r = _TYPES.get(t)
            if r is None:
                raise SandboxViolation("isinstance() takes str, int, bool, list or dict")
            real.append(r)
        return isinstance(x, tuple(real))

    def b_divmod(a: Any, b: Any) -> list[int]:
        rt._div_cost(a, b)
        q, r = divmod(a, b)
        return [q, r]

    def b_pow(a: Any, b: Any, m: Any = None) -> int:
        return rt.pow(a, b, m)

    _TYPES = {b_str: str, b_int: int, b_bool: bool, b_list: list, b_dict: dict}
    out: dict[str, Any] = {
        "len": len, "range": range, "abs": abs, "chr": chr, "ord": ord,
        "str": b_str, "repr": b_repr, "int": b_int, "bool": b_bool, "list": b_list,
        "dict": b_dict, "sorted": b_sorted, "min": b_min, "max": b_max, "sum": b_sum,
        "reversed": b_reversed, "enumerate": b_enumerate, "zip": b_zip, "any": b_any,
        "all": b_all, "isinstance": b_isinstance, "divmod": b_divmod, "pow": b_pow,
        "ValueError": ValueError, "KeyError": KeyError, "IndexError": IndexError,
        "TypeError": TypeError, "ZeroDivisionError": ZeroDivisionError,
        "LookupError": LookupError, "ArithmeticError": ArithmeticError,
        "AssertionError": AssertionError,
    }
    assert set(out) == T.SAFE_BUILTIN_NAMES, set(out) ^ T.SAFE_BUILTIN_NAMES
    return out


class _Missing:
    __slots__ = ()


_MISSING = _Missing()
