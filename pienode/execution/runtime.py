"""The metered runtime a contract's instrumented code calls into.

Owns the step counter (a closure cell of the contract's ``_module`` wrapper, decremented
inline by the instrumented code and here by the helpers), the helpers that replace every
operation whose C-level work is not bounded by a constant (``*``, ``**``, ``+`` of sequences,
``%``, ``|`` of dicts, slicing, ``in``, container comparisons, conversions to str, method
calls), and the curated builtins. Every helper charges *before* the work that could be large
and checks the result size, so exhaustion is a deterministic event at a deterministic point.

Must never expose a Python object the contract could walk to the interpreter: helpers return
only None/bool/int/str/list/dict, ``range`` objects and the engine's ``Ctx``/``Caller``.
"""

from __future__ import annotations

from typing import Any, Callable

from pienode.execution import runtime_tables as T


class Abort(BaseException):
    """Base of the engine's own aborts. BaseException: a contract's except cannot catch it."""

    kind = "InternalError"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class StepLimitExceeded(Abort):
    kind = "StepLimitExceeded"


class SizeLimitExceeded(Abort):
    kind = "SizeLimitExceeded"


class SandboxViolation(Abort):
    kind = "SandboxViolation"


class ContractFailed(Abort):
    kind = "ContractFailed"


class ReadOnlyViolation(Abort):
    kind = "ReadOnlyViolation"


class BadStateAccess(Abort):
    kind = "BadStateAccess"


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


class Runtime:
    """Per-call metering state and helpers. Built fresh for every call."""

    def __init__(self, limits: Any) -> None:
        self.reset(limits)
        self.builtins = self._make_builtins()
        from pienode.execution.methods import METHODS  # local: methods imports Runtime

        self._methods = METHODS
        #: the helpers in the order ``instrument.HELPERS`` unpacks them, bound once
        from pienode.execution.instrument import HELPERS

        self.T_int, self.T_str = int, str  # real types, for inline fast paths
        self.helpers = tuple(getattr(self, h) for h in HELPERS)
        #: ``_module`` functions already exec'd with these builtins, per contract
        self.modules: dict[tuple[str, str], Any] = {}

    def reset(self, limits: Any) -> None:
        """Prepare for a new call (a Runtime is reused by the calls of one thread)."""
        self.limits = limits
        self.steps = limits.steps
        self.max_len = limits.max_len
        self.max_str = limits.max_str_len
        self.max_bits = limits.max_int_bits
        self.cell: Any = None

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

    # ---- sizes -------------------------------------------------------------------------
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
                size = 1 + (len(x) if type(x) is list else 2 * len(x))
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

    # ---- arithmetic --------------------------------------------------------------------
    def add(self, a: Any, b: Any) -> Any:
        r = a + b
        t = r.__class__
        if t is int:
            if -_SMALL < r < _SMALL:
                return r
            return self.check_int(r)
        if t is str:
            n = len(r)
            if n > 256:
                self.check_str(n)
                self.charge(n // _CH)
        elif t is list:
            n = len(r)
            self.check_len(n, "list")
            self.charge(n)
        return r

    def sub(self, a: Any, b: Any) -> Any:
        r = a - b
        if r.__class__ is int and not -_SMALL < r < _SMALL:
            self.check_int(r)
        return r

    def mul(self, a: Any, b: Any) -> Any:
        ta, tb = a.__class__, b.__class__
        if ta is int and tb is int and -3037000499 < a < 3037000499 \
                and -3037000499 < b < 3037000499:
            return a * b
        if ta in (int, bool) and tb in (int, bool):
            ba, bb = a.bit_length(), b.bit_length()
            if ba + bb > self.max_bits + 1:
                raise SizeLimitExceeded(f"product of {ba + bb} bits exceeds {self.max_bits}")
            self.charge((ba // T.BITS_PER_STEP + 1) * (bb // T.BITS_PER_STEP + 1))
            return self.check_int(a * b)
        if ta in (str, list) and tb in (int, bool):
            return self._repeat(a, b)
        if tb in (str, list) and ta in (int, bool):
            return self._repeat(b, a)
        return a * b  # raises TypeError natively

    def _repeat(self, seq: Any, n: int) -> Any:
        size = len(seq) * max(n, 0)
        if type(seq) is str:
            self.check_str(size)
        else:
            self.check_len(size, "repeated list")
        self.charge(size // _CH if type(seq) is str else size)
        return seq * n

    def pow(self, a: Any, b: Any, m: Any = None) -> Any:
        if type(a) not in (int, bool) or type(b) not in (int, bool):
            raise SandboxViolation("** takes integers only")
        if m is not None:
            if type(m) not in (int, bool):
                raise SandboxViolation("pow() modulus must be an integer")
            mb = self.check_int(m).bit_length()
            self.charge((b.bit_length() + 1) * (mb // T.BITS_PER_STEP + 1) ** 2)
            return pow(a, b, m)
        if b < 0:
            raise SandboxViolation("negative exponent would give a float")
        if a in (0, 1, -1) or b <= 1:
            return a ** b
        bl = a.bit_length()
        bits = (bl - 1) * b + 1  # a lower bound on the result's size
        if bits > self.max_bits:
            raise SizeLimitExceeded(f"power of ~{bits} bits exceeds {self.max_bits}")
        bits = bl * b  # the upper bound, at most twice the cap: charged, then checked
        self.charge((bits // T.BITS_PER_STEP + 1) * 4)
        return self.check_int(a ** b)

    def lshift(self, a: Any, b: Any) -> Any:
        if type(a) in (int, bool) and type(b) in (int, bool) and b > 0:
            if a.bit_length() + b > self.max_bits:
                raise SizeLimitExceeded(f"shift result exceeds {self.max_bits} bits")
            self.charge(b // T.BITS_PER_STEP + 1)
        return a << b

    def mod(self, a: Any, b: Any) -> Any:
        if type(a) is str:
            raise SandboxViolation("string % formatting is not allowed; use f-strings")
        self._div_cost(a, b)
        return a % b

    def floordiv(self, a: Any, b: Any) -> Any:
        self._div_cost(a, b)
        return a // b

    def _div_cost(self, a: Any, b: Any) -> None:
        # long division is O(limbs(a) * limbs(b)); small operands cost nothing extra
        if a.__class__ is int and not -_SMALL < a < _SMALL and b.__class__ in (int, bool):
            self.charge(1 + (a.bit_length() >> 6) * ((b.bit_length() >> 6) + 1) // 2)

    def bitor(self, a: Any, b: Any) -> Any:
        if type(a) is dict:
            if type(b) is dict:
                self.check_len(len(a) + len(b), "dict")
                self.charge(len(a) + len(b) + self._keys_cost(b))
        return a | b

    @staticmethod
    def _keys_cost(d: dict[Any, Any]) -> int:
        # merging compares each equal-hash str key by content
        return sum(len(k) for k in d if k.__class__ is str) // _CH

    def iadd(self, a: Any, b: Any) -> Any:
        if a.__class__ is list:
            b = self.to_list(b)
            self.check_len(len(a) + len(b), "list")
            self.charge(len(b) + 1)
            a += b
            return a
        if a.__class__ is dict:
            return a + b  # TypeError natively
        return self.add(a, b)

    def ior(self, a: Any, b: Any) -> Any:
        if a.__class__ is dict and b.__class__ is dict:
            self.check_len(len(a) + len(b), "dict")
            self.charge(len(b) + 1 + self._keys_cost(b))
            a |= b
            return a
        return self.bitor(a, b)

    # ---- comparisons -------------------------------------------------------------------
    def _cmp_cost(self, a: Any, b: Any) -> None:
        ta, tb = a.__class__, b.__class__
        if ta is str and tb is str:
            n = min(len(a), len(b))
            if n > 256:
                self.charge(n // _CH)
        elif (ta is list or ta is dict) and (tb is list or tb is dict):
            self.walk(a)
            self.walk(b)

    def eq(self, a: Any, b: Any) -> bool:
        self._cmp_cost(a, b)
        return a == b

    def ne(self, a: Any, b: Any) -> bool:
        self._cmp_cost(a, b)
        return a != b

    def lt(self, a: Any, b: Any) -> bool:
        self._cmp_cost(a, b)
        return a < b

    def le(self, a: Any, b: Any) -> bool:
        self._cmp_cost(a, b)
        return a <= b

    def gt(self, a: Any, b: Any) -> bool:
        self._cmp_cost(a, b)
        return a > b

    def ge(self, a: Any, b: Any) -> bool:
        self._cmp_cost(a, b)
        return a >= b

    def contains(self, a: Any, b: Any) -> bool:
        """``a in b``."""
        tb = b.__class__
        if tb is dict:
            if a.__class__ is str and len(a) > 64:
                self.charge(len(a) // _CH)
            return a in b
        if tb is str:
            if type(a) is str:
                f = 1 + min(len(a), 100) // 4 if len(a) > 4 else 1
                self.charge((len(a) + len(b)) * f // _CH)
            return a in b
        if tb is list:
            self.charge(len(b) * self._elem_cost(a))
            return a in b
        if tb is range:
            if type(a) not in (int, bool):
                self.charge(len(b) if len(b) < (1 << 40) else (1 << 40))
            return a in b
        return a in b  # TypeError natively (int, None, ...)

    def not_contains(self, a: Any, b: Any) -> bool:
        return not self.contains(a, b)

    def _elem_cost(self, a: Any) -> int:
        t = type(a)
        if t is list or t is dict:
            return self.walk(a)
        return self._scalar_cost(a)

    def chain(self, ops: tuple[str, ...], *vals: Any) -> bool:
        """A chained comparison with all operands evaluated up front."""
        for i, op in enumerate(ops):
            if not getattr(self, op)(vals[i], vals[i + 1]):
                return False
        return True

    # ---- sequences ---------------------------------------------------------------------
    def slice(self, x: Any, lo: Any, hi: Any, st: Any) -> Any:
        t = type(x)
        if t is str or t is list:
            n = len(range(*slice(lo, hi, st).indices(len(x))))
            self.charge(1 + (n // _CH if t is str else n))
        return x[lo:hi:st]

    def delitem(self, x: Any, k: Any) -> None:
        if type(x) is list:
            self.charge(len(x) + 1)
        del x[k]

    def augsub(self, obj: Any, key: Any, op: str, value: Any) -> None:
        obj[key] = getattr(self, op)(obj[key], value)

    def star(self, x: Any) -> Any:
        t = type(x)
        if t is list or t is str or t is dict or t is range:
            n = len(x)
            self.check_len(n, "unpacked " + _tname(x))
            self.charge(n)
        return x

    def dstar(self, x: Any) -> Any:
        if type(x) is dict:
            self.charge(len(x))
        return x

    def to_list(self, x: Any) -> list[Any]:
        """Materialise an iterable as a new list, charging and capping first."""
        t = type(x)
        if t is list or t is str or t is dict or t is range:
            n = len(x)
            self.check_len(n, _tname(x))
            self.charge(n + 1)
            return list(x)
        raise TypeError(f"'{_tname(x)}' object is not iterable")

    # ---- attributes and methods ---------------------------------------------------------
    def ga(self, obj: Any, name: str) -> Any:
        allowed = FIELD_TYPES.get(type(obj))
        if allowed is None or name not in allowed:
            raise SandboxViolation(f"attribute '{name}' of {_tname(obj)} is not available")
        return getattr(obj, name)

    def mc(self, obj: Any, name: str, *args: Any) -> Any:
        h = self._methods.get((obj.__class__, name))
        if h is None:
            raise SandboxViolation(f"{_tname(obj)} has no method '{name}'")
        return h(self, obj, *args)

    def mck(self, obj: Any, name: str, kw: dict[str, Any], *args: Any) -> Any:
        """A method call with keyword arguments."""
        h = self._methods.get((obj.__class__, name))
        if h is None:
            raise SandboxViolation(f"{_tname(obj)} has no method '{name}'")
        return h(self, obj, *args, **kw)

    def kc(self, k: Any) -> Any:
        """A subscript key: a long str key costs a compare of its length on a hash hit."""
        if k.__class__ is str and len(k) > 64:
            self.charge(len(k) // _CH)
        return k

    # ---- conversions -------------------------------------------------------------------
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

    def _make_builtins(self) -> dict[str, Any]:
        from pienode.execution.builtins import make_builtins

        return make_builtins(self)
