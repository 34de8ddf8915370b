"""Deploy-time validation of contract source: the Python subset, refused with line and rule.

Owns the grammar of the subset (which tokens, AST nodes, names and attributes a contract may
use). Pure and deterministic: every node runs it on every deploy and must reach the same
verdict. Must never execute, compile or import the source it checks.

The subset in one breath: top-level ``def`` entry points (first parameter ``ctx``; when the
module defines ``EXPORTS = ["name", ...]`` only those), helper functions and literal
constants; statements if/for/while/assign/return/try-except (named
exceptions only, no finally); no imports, classes, decorators, generators, async, ``with``,
``global``/``nonlocal``, sets, floats, bytes, ``/``, attribute stores, or any name or
attribute beginning with ``_``. Identifiers are ASCII (refused at tokenize time, before
Python's NFKC normalisation could turn ``__ｃｌａｓｓ__`` into ``__class__``).
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import tokenize

from pienode.execution.runtime_tables import (
    ALLOWED_ATTRS,
    ALLOWED_EXCEPTIONS,
    SAFE_BUILTIN_NAMES,
)
from pienode.execution.types import ContractCode, ContractRefused

MAX_SOURCE_BYTES = 64 * 1024
MAX_AST_NODES = 20_000
MAX_AST_DEPTH = 60
MAX_INT_LITERAL_BITS = 4096
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

_STMTS = (
    ast.FunctionDef, ast.Return, ast.Delete, ast.Assign, ast.AugAssign, ast.AnnAssign,
    ast.For, ast.While, ast.If, ast.Raise, ast.Try, ast.Assert, ast.Expr, ast.Pass,
    ast.Break, ast.Continue,
)
_EXPRS = (
    ast.BoolOp, ast.NamedExpr, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict,
    ast.ListComp, ast.DictComp, ast.GeneratorExp, ast.Compare, ast.Call, ast.FormattedValue,
    ast.JoinedStr, ast.Constant, ast.Attribute, ast.Subscript, ast.Starred, ast.Name,
    ast.List, ast.Tuple, ast.Slice,
)
_OTHER = (
    ast.Module, ast.Load, ast.Store, ast.Del, ast.And, ast.Or, ast.Add, ast.Sub, ast.Mult,
    ast.Mod, ast.Pow, ast.LShift, ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd, ast.FloorDiv,
    ast.Invert, ast.Not, ast.UAdd, ast.USub, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn, ast.comprehension, ast.ExceptHandler,
    ast.arguments, ast.arg, ast.keyword,
)
ALLOWED_NODES = frozenset(_STMTS + _EXPRS + _OTHER)

#: Why a familiar construct is missing, for clearer messages.
_NODE_RULES: dict[type, tuple[str, str]] = {
    ast.Import: ("import", "imports are not allowed"),
    ast.ImportFrom: ("import", "imports are not allowed"),
    ast.Global: ("global", "'global' is not allowed"),
    ast.Nonlocal: ("global", "'nonlocal' is not allowed"),
    ast.ClassDef: ("class", "class definitions are not allowed"),
    ast.AsyncFunctionDef: ("async", "async functions are not allowed"),
    ast.Await: ("async", "await is not allowed"),
    ast.AsyncFor: ("async", "async for is not allowed"),
    ast.AsyncWith: ("async", "async with is not allowed"),
    ast.With: ("with", "'with' is not allowed"),
    ast.Yield: ("generator", "generators (yield) are not allowed"),
    ast.YieldFrom: ("generator", "generators (yield from) are not allowed"),
    ast.Set: ("set", "sets are not allowed (iteration order differs between nodes)"),
    ast.SetComp: ("set", "sets are not allowed (iteration order differs between nodes)"),
    ast.Div: ("true-division", "'/' gives floats, which are not allowed; use '//'"),
    ast.MatMult: ("operator", "'@' is not allowed"),
    ast.Match: ("match", "match statements are not allowed"),
    ast.TryStar: ("try", "except* is not allowed"),
}

_FORBIDDEN_NAMES = frozenset(
    {
        "eval", "exec", "compile", "open", "type", "getattr", "setattr", "delattr", "hasattr",
        "vars", "dir", "globals", "locals", "id", "hash", "print", "input", "breakpoint",
        "help", "memoryview", "object", "super", "classmethod", "staticmethod", "property",
        "iter", "next", "set", "frozenset", "float", "complex", "bytes", "bytearray",
        "format", "callable", "issubclass", "exit", "quit", "copyright", "credits",
        "license", "aiter", "anext", "slice", "map", "filter", "ascii", "bin", "oct", "hex",
        "round", "BaseException", "Exception", "StopIteration", "GeneratorExit",
        "KeyboardInterrupt", "SystemExit", "RuntimeError", "RecursionError", "MemoryError",
        "NotImplemented", "Ellipsis",
    }
)


def _refuse(node: ast.AST | int, message: str, rule: str) -> ContractRefused:
    line = node if isinstance(node, int) else getattr(node, "lineno", 0)
    return ContractRefused(message, line=int(line or 0), rule=rule)


def check_tokens(source: str) -> None:
    """Refuse non-ASCII anywhere outside string literals and comments."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        line = getattr(exc, "lineno", None) or (exc.args[1][0] if len(exc.args) > 1 else 0)
        raise _refuse(int(line or 0), f"cannot tokenize: {exc.args[0]}", "syntax") from None
    for tok in tokens:
        if tok.type in (tokenize.STRING, tokenize.COMMENT):
            continue
        if not tok.string.isascii():
            if tok.type == tokenize.NAME:
                raise _refuse(tok.start[0], f"non-ASCII identifier {tok.string!r}",
                              "non-ascii-identifier")
            raise _refuse(tok.start[0], "non-ASCII character outside a string literal",
                          "non-ascii-identifier")


class _Checker:
    def __init__(self) -> None:
        self.defined: set[str] = set()
        self.count = 0

    def collect(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.defined.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
                if isinstance(node, ast.FunctionDef):
                    self.defined.add(node.name)
                a = node.args
                for arg in a.posonlyargs + a.args + a.kwonlyargs:
                    self.defined.add(arg.arg)
                if a.kwarg:
                    self.defined.add(a.kwarg.arg)
                if a.vararg:
                    self.defined.add(a.vararg.arg)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.defined.add(node.name)

    def check(self, node: ast.AST, depth: int, line: int = 0) -> None:
        line = getattr(node, "lineno", line)
        self.count += 1
        if self.count > MAX_AST_NODES:
            raise _refuse(node, f"contract too large (more than {MAX_AST_NODES} syntax nodes)",
                          "too-large")
        if depth > MAX_AST_DEPTH:
            raise _refuse(node, f"nesting deeper than {MAX_AST_DEPTH}", "too-deep")
        t = type(node)
        if t not in ALLOWED_NODES:
            rule, msg = _NODE_RULES.get(t, ("node", f"{t.__name__} is not allowed"))
            raise _refuse(line, msg, rule)
        getattr(self, "visit_" + t.__name__, _noop)(node)
        for child in ast.iter_child_nodes(node):
            self.check(child, depth + 1, line)

    def visit_Name(self, node: ast.Name) -> None:
        self._name(node, node.id)
        if node.id in _FORBIDDEN_NAMES:
            raise _refuse(node, f"name '{node.id}' is not available in contracts",
                          "forbidden-name")
        if (isinstance(node.ctx, ast.Load) and node.id not in self.defined
                and node.id not in SAFE_BUILTIN_NAMES):
            raise _refuse(node, f"undefined name '{node.id}'", "undefined-name")

    def _name(self, node: ast.AST, name: str) -> None:
        if name.startswith("_"):
            raise _refuse(node, f"names starting with '_' are not allowed ({name!r})",
                          "underscore-name")

    def visit_arg(self, node: ast.arg) -> None:
        self._name(node, node.arg)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None:
            self._name(node, node.arg)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._name(node, node.name)
        names = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        for n in names:
            if not (isinstance(n, ast.Name) and n.id in ALLOWED_EXCEPTIONS):
                raise _refuse(node, "except must name exceptions from: "
                              + ", ".join(sorted(ALLOWED_EXCEPTIONS)), "except")

    def visit_Try(self, node: ast.Try) -> None:
        if node.finalbody:
            raise _refuse(node, "'finally' is not allowed", "try")

    def visit_Raise(self, node: ast.Raise) -> None:
        if node.cause is not None:
            raise _refuse(node, "'raise ... from' is not allowed", "raise")
        exc = node.exc
        if exc is None:
            return
        target = exc.func if isinstance(exc, ast.Call) else exc
        if not (isinstance(target, ast.Name) and target.id in ALLOWED_EXCEPTIONS):
            raise _refuse(node, "raise must name an exception from: "
                          + ", ".join(sorted(ALLOWED_EXCEPTIONS)), "raise")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_"):
            raise _refuse(node, f"attribute '{node.attr}' starts with '_'", "underscore-name")
        if node.attr in ("format", "format_map"):
            raise _refuse(node, f"'{node.attr}' walks attributes; use f-strings",
                          "format-method")
        if not isinstance(node.ctx, ast.Load):
            raise _refuse(node, "assigning or deleting attributes is not allowed",
                          "attribute-store")
        if node.attr not in ALLOWED_ATTRS:
            raise _refuse(node, f"attribute '{node.attr}' is not available", "attribute")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._name(node, node.name)
        if node.decorator_list:
            raise _refuse(node, "decorators are not allowed", "decorator")
        if node.args.vararg is not None:
            raise _refuse(node, "'*args' parameters are not allowed", "varargs")

    def visit_Lambda(self, node: ast.Lambda) -> None:
        if node.args.vararg is not None:
            raise _refuse(node, "'*args' parameters are not allowed", "varargs")

    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, int):
            if v.bit_length() > MAX_INT_LITERAL_BITS:
                raise _refuse(node, "integer literal too large", "big-literal")
            return
        kind = type(v).__name__
        rule = "float" if kind in ("float", "complex") else kind
        raise _refuse(node, f"{kind} literals are not allowed", rule)

    def visit_Compare(self, node: ast.Compare) -> None:
        if len(node.ops) > 1 and any(isinstance(o, (ast.Is, ast.IsNot)) for o in node.ops):
            raise _refuse(node, "'is' cannot be chained with other comparisons", "identity")
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.Is, ast.IsNot)):
                if not (isinstance(right, ast.Constant)
                        and (right.value is None or right.value is True
                             or right.value is False)):
                    raise _refuse(node, "'is' compares only with None, True or False", "identity")

    def visit_FormattedValue(self, node: ast.FormattedValue) -> None:
        if node.format_spec is not None:
            raise _refuse(node, "format specs in f-strings are not allowed", "format-spec")
        if node.conversion == ord("a"):
            raise _refuse(node, "!a conversion is not allowed", "format-spec")

    def visit_For(self, node: ast.For) -> None:
        self._no_starred_target(node.target)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        if node.is_async:
            raise _refuse(node.target, "async comprehensions are not allowed", "async")
        self._no_starred_target(node.target)

    def _no_starred_target(self, target: ast.AST) -> None:
        for n in ast.walk(target):
            if isinstance(n, ast.Starred):
                raise _refuse(n, "starred loop targets are not allowed", "starred-target")
            if isinstance(n, (ast.Subscript, ast.Attribute)):
                raise _refuse(n, "loop targets must be names", "loop-target")

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Slice):
                raise _refuse(node, "deleting slices is not allowed", "slice-store")

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._store_target(t)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Subscript) and isinstance(node.target.slice, ast.Slice):
            raise _refuse(node, "assigning to slices is not allowed", "slice-store")

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if not isinstance(node.target, ast.Name):
            raise _refuse(node, "annotated assignment only to a name", "annotation")

    def _store_target(self, t: ast.AST) -> None:
        for n in ast.walk(t):
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice):
                raise _refuse(n, "assigning to slices is not allowed", "slice-store")


def _noop(node: ast.AST) -> None:
    return None


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_literal(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult,
                                                             ast.FloorDiv)):
        return _is_literal(node.left) and _is_literal(node.right)
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(
            _is_literal(v) for v in node.values)
    return False


def _check_top_level(tree: ast.Module) -> tuple[str, ...]:
    entries: list[str] = []
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef):
            a = stmt.args
            params = a.posonlyargs + a.args
            if params and params[0].arg == "ctx":
                entries.append(stmt.name)
            continue
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue  # module docstring
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets) \
                and _is_literal(stmt.value):
            continue
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                and stmt.value is not None and _is_literal(stmt.value):
            continue
        raise _refuse(stmt, "only function definitions and literal constants are allowed at "
                      "top level", "top-level")
    exports = _exports(tree)
    if exports is not None:
        for name, line in exports:
            if name not in entries:
                raise _refuse(line, f"EXPORTS names '{name}', which is not a top-level "
                              "'def name(ctx, ...)'", "exports")
        entries = [e for e in entries if e in {n for n, _ in exports}]
    if not entries:
        raise _refuse(1, "no entry point (a top-level 'def name(ctx, ...)')", "no-entry-point")
    return tuple(entries)


def _exports(tree: ast.Module) -> list[tuple[str, int]] | None:
    """``EXPORTS = ["a", "b"]`` limits the entry points, so that helpers taking ``ctx``
    cannot be called from outside."""
    found = None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "EXPORTS" for t in stmt.targets):
            v = stmt.value
            if not (isinstance(v, (ast.List, ast.Tuple)) and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in v.elts)):
                raise _refuse(stmt, "EXPORTS must be a list of function names", "exports")
            found = [(str(getattr(e, "value")), stmt.lineno) for e in v.elts]
    return found


def parse_checked(source: str) -> tuple[ast.Module, tuple[str, ...]]:
    """Validate and return the AST and entry points (shared with the instrumenter)."""
    if not isinstance(source, str):
        raise _refuse(0, "source must be text", "syntax")
    try:
        raw = source.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(0, "source is not valid UTF-8 text", "syntax") from None
    if len(raw) > MAX_SOURCE_BYTES:
        raise _refuse(0, f"source larger than {MAX_SOURCE_BYTES} bytes", "too-large")
    if "\x00" in source:
        raise _refuse(0, "NUL byte in source", "syntax")
    check_tokens(source)
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        raise _refuse(exc.lineno or 0, f"syntax error: {exc.msg}", "syntax") from None
    except (RecursionError, MemoryError, ValueError):
        raise _refuse(0, "source nests too deeply to parse", "too-deep") from None
    checker = _Checker()
    checker.collect(tree)
    checker.check(tree, 0)
    return tree, _check_top_level(tree)


def validate(source: str, name: str) -> ContractCode:
    """Check ``source`` against the subset and return the deployable ``ContractCode``.

    Raises:
        ContractRefused: naming the first offending line and rule.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _refuse(0, f"bad contract name {name!r} (want [a-z][a-z0-9_]{{0,63}})",
                      "contract-name")
    _, entries = parse_checked(source)
    code_hash = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return ContractCode(name=name, source=source, code_hash=code_hash, entry_points=entries)
