"""The methods a contract may call on str, list, dict and int values, each with its cost.

Owns ``METHODS``: (type, name) -> handler(rt, obj, *args). A handler charges for the work,
checks the size of what it would build before building it, and converts tuple results to
lists (the subset has no tuples, so no hashable container can be built for exponential
hashing). Must never return a bound method or any object the contract could introspect.
"""

from __future__ import annotations

from typing import Any, Callable

from pienode.execution import runtime_tables as T
from pienode.execution.builtins import sort_list
from pienode.execution.runtime import Runtime

_CH = T.CHARS_PER_STEP
Handler = Callable[..., Any]
METHODS: dict[tuple[type, str], Handler] = {}


def _str_args_len(args: tuple[Any, ...]) -> int:
    return sum(len(a) for a in args if type(a) is str)


def _needle_factor(args: tuple[Any, ...]) -> int:
    """CPython's default substring search is O(n*m) in the worst case for needles shorter
    than ~100 characters (longer ones use the linear two-way algorithm); price that."""
    a = args[0]
    if type(a) is str and len(a) > 4:
        return 1 + min(len(a), 100) // 4
    return 1


def _linear_str(name: str) -> Handler:
    method = getattr(str, name)

    def h(rt: Runtime, s: str, *args: Any, **kw: Any) -> Any:
        n = len(s)
        if args:
            n = (n + _str_args_len(args)) * _needle_factor(args)
        if n > _CH:
            rt.charge(n // _CH)
        r = method(s, *args, **kw)
        t = type(r)
        if t is str:
            rt.check_str(len(r))
        elif t is tuple:
            r = list(r)
        elif t is list:
            rt.charge(len(r))
        return r

    return h


for _n in T.STR_METHODS - {"replace", "join", "center", "ljust", "rjust", "zfill"}:
    METHODS[(str, _n)] = _linear_str(_n)


def _replace(rt: Runtime, s: str, old: Any, new: Any, count: Any = -1) -> str:
    if type(old) is not str or type(new) is not str or type(count) not in (int, bool):
        raise TypeError("replace() takes (str, str[, int])")
    rt.charge(1 + len(s) * _needle_factor((old,)) // _CH)
    n = len(s) + 1 if old == "" else s.count(old)
    if count >= 0:
        n = min(n, count)
    size = len(s) + n * (len(new) - len(old))
    rt.check_str(size)
    rt.charge((len(s) + size) // 8 + n // 4)  # replacing is slower per char than copying
    return s.replace(old, new, count)


def _join(rt: Runtime, sep: str, items: Any) -> str:
    parts = rt.to_list(items)
    size = 0
    for p in parts:
        if type(p) is not str:
            raise TypeError("join() takes a list of str")
        size += len(p)
    size += len(sep) * max(len(parts) - 1, 0)
    rt.check_str(size)
    rt.charge(size // _CH + len(parts))
    return sep.join(parts)


def _pad(name: str) -> Handler:
    def h(rt: Runtime, s: str, width: Any, *fill: Any) -> str:
        if type(width) not in (int, bool):
            raise TypeError(f"{name}() width must be an integer")
        rt.check_str(width)
        rt.charge(1 + max(width, len(s)) // _CH)
        return getattr(s, name)(width, *fill)

    return h


METHODS[(str, "replace")] = _replace
METHODS[(str, "join")] = _join
for _n in ("center", "ljust", "rjust", "zfill"):
    METHODS[(str, _n)] = _pad(_n)


# ---- list ------------------------------------------------------------------------------
def _append(rt: Runtime, lst: list[Any], x: Any) -> None:
    if len(lst) >= rt.max_len:
        rt.check_len(len(lst) + 1, "list")
    lst.append(x)


def _extend(rt: Runtime, lst: list[Any], x: Any) -> None:
    items = rt.to_list(x)
    rt.check_len(len(lst) + len(items), "list")
    lst.extend(items)


def _insert(rt: Runtime, lst: list[Any], i: Any, x: Any) -> None:
    rt.check_len(len(lst) + 1, "list")
    rt.charge(len(lst) + 1)
    lst.insert(i, x)


def _pop(rt: Runtime, lst: list[Any], *i: Any) -> Any:
    if i and i[0] != -1:
        rt.charge(len(lst) + 1)
    return lst.pop(*i)


def _scan_list(name: str) -> Handler:
    def h(rt: Runtime, lst: list[Any], x: Any, *args: Any) -> Any:
        rt.charge(len(lst) * rt._elem_cost(x) + 1)
        return getattr(lst, name)(x, *args)

    return h


def _linear_list(name: str) -> Handler:
    def h(rt: Runtime, lst: list[Any]) -> Any:
        rt.charge(len(lst) + 1)
        return getattr(lst, name)()

    return h


def _sort(rt: Runtime, lst: list[Any], key: Any = None, reverse: Any = False) -> None:
    sort_list(rt, lst, key, reverse)


METHODS.update({
    (list, "append"): _append, (list, "extend"): _extend, (list, "insert"): _insert,
    (list, "pop"): _pop, (list, "remove"): _scan_list("remove"),
    (list, "index"): _scan_list("index"), (list, "count"): _scan_list("count"),
    (list, "reverse"): _linear_list("reverse"), (list, "copy"): _linear_list("copy"),
    (list, "clear"): _linear_list("clear"), (list, "sort"): _sort,
})


# ---- dict ------------------------------------------------------------------------------
def _dget(rt: Runtime, d: dict[Any, Any], k: Any, default: Any = None) -> Any:
    if k.__class__ is str and len(k) > 64:
        rt.kc(k)
    return d.get(k, default)


def _dpop(rt: Runtime, d: dict[Any, Any], k: Any, *default: Any) -> Any:
    rt.kc(k)
    return d.pop(k, *default)


def _setdefault(rt: Runtime, d: dict[Any, Any], k: Any, default: Any = None) -> Any:
    rt.kc(k)
    return d.setdefault(k, default)


def _update(rt: Runtime, d: dict[Any, Any], other: Any = None, **kw: Any) -> None:
    if other is not None:
        if type(other) is not dict:
            raise TypeError("update() takes a dict")
        rt.check_len(len(d) + len(other), "dict")
        rt.charge(len(other) + 1 + sum(len(k) for k in other if type(k) is str) // _CH)
        d.update(other)
    if kw:
        rt.charge(len(kw))
        d.update(kw)


def _keys(rt: Runtime, d: dict[Any, Any]) -> list[Any]:
    rt.charge(len(d) + 1)
    return list(d)


def _values(rt: Runtime, d: dict[Any, Any]) -> list[Any]:
    rt.charge(len(d) + 1)
    return list(d.values())


def _items(rt: Runtime, d: dict[Any, Any]) -> list[list[Any]]:
    rt.charge(2 * len(d) + 1)
    return [[k, v] for k, v in d.items()]


def _popitem(rt: Runtime, d: dict[Any, Any]) -> list[Any]:
    return list(d.popitem())


def _dcopy(rt: Runtime, d: dict[Any, Any]) -> dict[Any, Any]:
    rt.charge(len(d) + 1)
    return d.copy()


def _dclear(rt: Runtime, d: dict[Any, Any]) -> None:
    rt.charge(len(d) + 1)
    d.clear()


METHODS.update({
    (dict, "get"): _dget, (dict, "pop"): _dpop, (dict, "setdefault"): _setdefault,
    (dict, "update"): _update, (dict, "keys"): _keys, (dict, "values"): _values,
    (dict, "items"): _items, (dict, "popitem"): _popitem, (dict, "copy"): _dcopy,
    (dict, "clear"): _dclear,
})


def _bit_length(rt: Runtime, i: int) -> int:
    return i.bit_length()


METHODS[(int, "bit_length")] = _bit_length
METHODS[(bool, "bit_length")] = _bit_length
