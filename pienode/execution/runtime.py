"""The metered runtime a contract's instrumented code calls into.

Owns (with ``pricing``, which keeps the step counter and the logical-size walk) the helpers
that replace every
operation whose C-level work is not bounded by a constant (``*``, ``**``, ``+`` of sequences,
``%``, ``|`` of dicts, slicing, ``in``, container comparisons, conversions to str, method
calls), and the curated builtins. Every helper charges *before* the work that could be large
and checks the result size, so exhaustion is a deterministic event at a deterministic point.

Must never expose a Python object the contract could walk to the interpreter: helpers return
only None/bool/int/str/list/dict, ``range`` objects and the engine's ``Ctx``/``Caller``.
"""

from __future__ import annotations

from typing import Any

from pienode.execution import runtime_tables as T
from pienode.execution.aborts import (  # re-exported: other modules import them from here
    Abort,
    BadStateAccess,
    ContractFailed,
    ReadOnlyViolation,
    SandboxViolation,
    SizeLimitExceeded,
    StepLimitExceeded,
)
from pienode.execution.pricing import FIELD_TYPES, Pricing, _tname

__all__ = ["Abort", "BadStateAccess", "ContractFailed", "ReadOnlyViolation", "SandboxViolation",
           "SizeLimitExceeded", "StepLimitExceeded", "FIELD_TYPES", "Runtime"]

_SMALL = T.SMALL_INT
_CH = T.CHARS_PER_STEP


class Runtime(Pricing):
    """Per-call metering state and helpers; one per thread, ``reset`` for every call."""

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

    def _make_builtins(self) -> dict[str, Any]:
        from pienode.execution.builtins import make_builtins

        return make_builtins(self)
