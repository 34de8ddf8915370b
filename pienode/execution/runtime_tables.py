"""Names the subset allows, and the step costs: shared by the validator and the runtime.

Pure data. Changing a cost or a name here changes consensus behaviour (step counts, what
deploys), so it is versioned with the engine: bump ``ENGINE_VERSION`` when you do.
"""

from __future__ import annotations

ENGINE_VERSION = 1

#: Exceptions a contract may raise and catch. None of the engine's own aborts (steps, size,
#: sandbox, ctx.fail) derives from them, so a contract can never swallow its own abort.
ALLOWED_EXCEPTIONS = frozenset(
    {"ValueError", "KeyError", "IndexError", "TypeError", "ZeroDivisionError",
     "LookupError", "ArithmeticError", "AssertionError"}
)

SAFE_BUILTIN_NAMES = frozenset(
    {"len", "range", "abs", "min", "max", "sum", "sorted", "reversed", "enumerate", "zip",
     "any", "all", "isinstance", "str", "int", "bool", "list", "dict", "repr", "chr", "ord",
     "divmod", "pow"}
    | ALLOWED_EXCEPTIONS
)

STR_METHODS = frozenset(
    {"lower", "upper", "casefold", "title", "capitalize", "swapcase", "strip", "lstrip",
     "rstrip", "startswith", "endswith", "find", "rfind", "index", "rindex", "count",
     "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "isdecimal",
     "isnumeric", "isascii", "istitle", "split", "rsplit", "splitlines", "partition",
     "rpartition", "removeprefix", "removesuffix", "replace", "join", "center", "ljust",
     "rjust", "zfill"}
)
LIST_METHODS = frozenset(
    {"append", "extend", "insert", "pop", "remove", "index", "count", "reverse", "sort",
     "copy", "clear"}
)
DICT_METHODS = frozenset(
    {"get", "keys", "values", "items", "pop", "setdefault", "update", "copy", "clear",
     "popitem"}
)
INT_METHODS = frozenset({"bit_length"})
CTX_METHODS = frozenset({"get", "put", "delete", "scan", "record", "index", "emit", "fail"})
CTX_FIELDS = frozenset({"caller", "height", "tx_id", "timestamp", "contract"})
CALLER_FIELDS = frozenset({"user_id", "role", "security_level"})

ALLOWED_ATTRS = (
    STR_METHODS | LIST_METHODS | DICT_METHODS | INT_METHODS | CTX_METHODS | CTX_FIELDS
    | CALLER_FIELDS
)

# ---- step costs (calibrated by benchmarks/contracts_bench.py; ~20-60 ns per step) ----
#: characters of a string that cost one step to create, copy, compare or search
CHARS_PER_STEP = 32
#: extra static steps for a method call and for each f-string field (their helpers do more
#: interpreter work than one syntax node)
METHOD_CALL = 6
FSTRING_FIELD = 12
#: bits of an integer operand per step unit of multiplication cost
BITS_PER_STEP = 64
#: base cost of every ctx call that crosses to the node (IPC round trip, store read)
CTX_CALL = 500
#: bytes moved across the ctx door per extra step
CTX_BYTES_PER_STEP = 16
#: an int whose magnitude stays below this never needs a size check
SMALL_INT = 1 << 62
#: steps charged per distinct container visited when pricing a comparison or conversion
WALK_VISIT = 8
#: how deep a value may nest (lists in dicts in lists ...)
MAX_NESTING = 64
