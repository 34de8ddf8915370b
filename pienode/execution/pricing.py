"""Pricing: the step counter and what a value costs to compare, convert or look up.

Owns the counter (a closure cell of the contract's ``_module``: ``charge`` decrements it,
``out`` ends the call) and the logical-size walk that prices containers before a native
``==``, ``<``, ``in``, ``str()`` or export touches them. Must never let a shared or cyclic
structure be priced by its memory size: a value ``a = [a, a]`` nested sixty times costs
2**60, found after sixty visits.
"""

from __future__ import annotations

from typing import Any, Callable

from pienode.execution import runtime_tables as T
from pienode.execution.aborts import SandboxViolation, SizeLimitExceeded, StepLimitExceeded

#: Engine-owned types whose listed attributes a contract may read (filled by ``ctx``).
FIELD_TYPES: dict[type, frozenset[str]] = {}

_SMALL = T.SMALL_INT
_CH = T.CHARS_PER_STEP
_NoneType = type(None)
_SCALARS = (int, bool, str, _NoneType)
_STR_ONLY = {str}
_INT_ONLY = {int}


def _tname(x: Any) -> str:
    t = type(x)
    return {list: "list", dict: "dict", str: "str", int: "int", bool: "bool",
            _NoneType: "None", range: "range"}.get(t, "object")


class Pricing:
    """Mixed into ``Runtime``; the attributes below are set by ``Runtime.reset``."""

    steps: int
    max_len: int
    max_str: int
    max_bits: int
    cell: Any

    # ---- the counter -------------------------------------------------------------------
    def bind(self, cell: Any) -> None:
        self.cell = cell

    def remaining(self) -> int:
        return self.cell.cell_contents if self.cell is not None else self.steps

    def used(self) -> int:
        return min(self.steps, self.steps - self.remaining())

    def out(self) -> None:
        raise StepLimitExceeded(f"step budget of {self.steps} exhausted")

    def charge(self, k: int) -> None:
        c = self.cell
        v = c.cell_contents - k
        c.cell_contents = v
        if v < 0:
            self.out()

    def tk(self, k: int) -> bool:
        self.charge(k)
        return True

    def check_len(self, n: int, what: str = "value") -> None:
        if n > self.max_len:
            raise SizeLimitExceeded(f"{what} of {n} elements exceeds {self.max_len}")

    def check_str(self, n: int) -> None:
        if n > self.max_str:
            raise SizeLimitExceeded(f"string of {n} characters exceeds {self.max_str}")

    def check_int(self, r: int) -> int:
        if r.bit_length() > self.max_bits:
            raise SizeLimitExceeded(f"integer of {r.bit_length()} bits exceeds {self.max_bits}")
        return r

    def walk(self, obj: Any) -> int:
        """Charge the logical size of ``obj``: what a native ``==``, ``<``, ``str()`` or an
        export would traverse, shared sub-values counted each time they occur.

        Sizes are memoised per container, so a value built to make comparison exponential
        (``a = [a, a]`` sixty times) is priced at 2**60 after visiting sixty nodes and trips
        the budget at once; the walk's own work (WALK_VISIT steps per distinct container) is
        charged too. Cycles and nesting deeper than MAX_NESTING are refused.
        """
        t = type(obj)
        if t is not list and t is not dict:
            cost = self._scalar_cost(obj)
            self.charge(cost)
            return cost
        memo: dict[int, int] = {}
        onpath: set[int] = set()
        stack: list[tuple[Any, int, bool]] = [(obj, 0, False)]
        visits = 0
        budget = self.remaining()
        while stack:
            x, depth, done = stack.pop()
            i = id(x)
            vals = x if type(x) is list else x.values()
            if done:
                size = 1 + (2 * len(x) if type(x) is list else 3 * len(x))  # calibrated
                if type(x) is dict:
                    size += self._keys_cost(x)
                ts = set(map(type, vals))
                if not (list in ts or dict in ts):  # flat: price it at C speed
                    if ts == _STR_ONLY:
                        size += sum(map(len, vals)) // _CH
                    elif ts == _INT_ONLY:
                        if max(map(int.bit_length, vals)) > 127:
                            size += sum(self._scalar_cost(e) for e in vals)
                    elif str in ts or int in ts:
                        size += sum(self._scalar_cost(e) for e in vals)
                    memo[i] = size
                    onpath.discard(i)
                    continue
                for e in vals:
                    te = type(e)
                    if te is list or te is dict:
                        size += memo[id(e)]
                    elif te is str:
                        size += len(e) // _CH
                    elif te is int:
                        size += self._scalar_cost(e)
                memo[i] = size
                onpath.discard(i)
                continue
            if i in memo:
                continue
            if i in onpath:
                raise SizeLimitExceeded("value is cyclic")
            if depth >= T.MAX_NESTING:
                raise SizeLimitExceeded(f"value nests deeper than {T.MAX_NESTING}")
            visits += 1
            if visits * T.WALK_VISIT > budget:
                self.charge(visits * T.WALK_VISIT)  # raises
            onpath.add(i)
            stack.append((x, depth, True))
            ts = set(map(type, vals))
            if list in ts or dict in ts:
                for e in vals:
                    te = type(e)
                    if (te is list or te is dict) and id(e) not in memo:
                        stack.append((e, depth + 1, False))
        total = memo[id(obj)] + visits * T.WALK_VISIT
        self.charge(total)
        return total

    @staticmethod
    def _scalar_cost(x: Any) -> int:
        t = type(x)
        if t is str:
            return 1 + len(x) // _CH
        if t is int:
            # decimal conversion is quadratic in the number of 64-bit limbs
            return 1 + (x.bit_length() >> 6) ** 2 // 4
        return 1

    @staticmethod
    def _keys_cost(d: dict[Any, Any]) -> int:
        # merging compares each equal-hash str key by content
        return sum(len(k) for k in d if k.__class__ is str) // _CH

    def _cmp_cost(self, a: Any, b: Any) -> None:
        ta, tb = a.__class__, b.__class__
        if ta is str and tb is str:
            n = min(len(a), len(b))
            if n > 256:
                self.charge(n // _CH)
        elif (ta is list or ta is dict) and (tb is list or tb is dict):
            self.walk(a)
            self.walk(b)

    def _elem_cost(self, a: Any) -> int:
        t = type(a)
        if t is list or t is dict:
            return self.walk(a)
        return self._scalar_cost(a)

    def kc(self, k: Any) -> Any:
        """A subscript key: a long str key costs a compare of its length on a hash hit."""
        if k.__class__ is str and len(k) > 64:
            self.charge(len(k) // _CH)
        return k

    def to_str(self, x: Any) -> str:
        t = type(x)
        if t is str:
            return x
        if t is int:
            if not -_SMALL < x < _SMALL:
                self.charge(self._scalar_cost(x))
            return str(x)
        if t is bool or x is None:
            return str(x)
        return self._render(x, str)

    def repr_(self, x: Any) -> str:
        t = type(x)
        if t is int or t is bool or x is None:
            return self.to_str(x)
        return self._render(x, repr)

    def _render(self, x: Any, fn: Callable[[Any], str]) -> str:
        t = type(x)
        if t in (list, dict, str):
            self.walk(x)
        elif t is range:
            self.charge(2)
        elif isinstance(x, Exception):
            # Only scalar arguments render: a function's repr would carry its address.
            self.charge(2)
            if not all(type(a) in _SCALARS for a in x.args):
                return type(x).__name__
            if any(type(a) is str and len(a) > self.max_len for a in x.args):
                raise SizeLimitExceeded("exception message too long")
        else:
            raise SandboxViolation(f"cannot convert {_tname(x)} to str")
        s = fn(x)
        # repr may escape a character into up to 10; the walk charged the input only.
        self.check_str(len(s))
        self.charge(len(s) // _CH)
        return s

    def fstr(self, *parts: Any) -> str:
        out = [p if type(p) is str else self.to_str(p) for p in parts]
        n = sum(len(p) for p in out)
        self.check_str(n)
        self.charge(n // _CH + 1)
        return "".join(out)
