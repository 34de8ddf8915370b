"""Rewrite a validated contract AST into metered Python and compile it.

Owns the translation (see the module docstring of ``runtime`` for what the helpers do):

- the module becomes ``def _module(_rt): _S = budget; <helpers bound as locals>; <body>;
  return {entry points}``, so the step counter ``_S`` is a closure cell shared by every
  contract function (``nonlocal _S``) and decremented inline: ``if (_S := _S - k) < 0:
  _out()`` at every function entry and loop iteration, and as a first ``if`` of every
  comprehension (``_tk(k)`` inside lambdas, which cannot declare ``nonlocal``);
- ``k`` is the static number of syntax nodes the function body / loop body / comprehension
  element evaluates (both branches of an ``if`` counted), so a step is roughly one node;
- operations whose C work is not constant go through helpers: ``+ - * ** << % |`` (except
  ``+ - |`` with a small int literal), every comparison unless one side is a literal
  (``in``/``not in`` always), slicing, ``del x[i]``, augmented assignment, star-unpacking,
  method calls (``_mc(obj, "name", ...)``), attribute reads (``_ga``), f-strings;
- tuple displays become lists and generator expressions become list comprehensions, so no
  hashable container exists inside a contract.

Must never emit a name a contract could also write (every generated name starts with
``_``, which the validator refuses in contract source).
"""

from __future__ import annotations

import ast
from typing import Any

from pienode.execution import astgen as A
from pienode.execution.validator import parse_checked

HELPERS = (
    "out", "tk", "add", "sub", "mul", "pow", "lshift", "mod", "bitor", "iadd", "ior", "eq",
    "ne", "lt", "le", "gt", "ge", "contains", "not_contains", "chain", "slice", "delitem",
    "augsub", "star", "dstar", "ga", "mc", "mck", "kc", "fstr", "repr_", "T_int", "floordiv",
)
class Instrumenter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.scopes: list[str] = ["func"]  # _module itself is a function scope

    # ---- ticks --------------------------------------------------------------------------
    def _tick_stmt(self, k: int) -> ast.stmt:
        # if (_S := _S - k) < 0: _out()
        walrus = ast.NamedExpr(target=ast.Name(id="_S", ctx=ast.Store()),
                               value=ast.BinOp(left=ast.Name(id="_S", ctx=ast.Load()),
                                               op=ast.Sub(), right=A.const(max(1, k))))
        return ast.If(test=ast.Compare(left=walrus, ops=[ast.Lt()], comparators=[A.const(0)]),
                      body=[ast.Expr(value=A.call("out"))], orelse=[])

    def _tick_expr(self, k: int) -> ast.expr:
        if self.scopes[-1] == "lambda":
            return A.call("tk", A.const(max(1, k)))
        walrus = ast.NamedExpr(target=ast.Name(id="_S", ctx=ast.Store()),
                               value=ast.BinOp(left=ast.Name(id="_S", ctx=ast.Load()),
                                               op=ast.Sub(), right=A.const(max(1, k))))
        return ast.BoolOp(op=ast.Or(), values=[
            ast.Compare(left=walrus, ops=[ast.GtE()], comparators=[A.const(0)]),
            A.call("out")])

    # ---- scopes -------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.decorator_list = []
        node.returns = None
        self._strip_annotations(node.args)
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [None if d is None else self.visit(d)
                                 for d in node.args.kw_defaults]
        k = 1 + len(node.args.args) + len(node.args.kwonlyargs) + A.cost(node.body)
        self.scopes.append("func")
        body = self._stmts(node.body)
        self.scopes.pop()
        node.body = [ast.Nonlocal(names=["_S"]), self._tick_stmt(k)] + body
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.Lambda:
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [None if d is None else self.visit(d)
                                 for d in node.args.kw_defaults]
        k = 1 + len(node.args.args) + A.cost(node.body)
        self.scopes.append("lambda")
        body = self.visit(node.body)
        self.scopes.pop()
        node.body = ast.BoolOp(op=ast.And(), values=[A.call("tk", A.const(k)), body])
        return node

    @staticmethod
    def _strip_annotations(args: ast.arguments) -> None:
        for a in args.posonlyargs + args.args + args.kwonlyargs:
            a.annotation = None
        if args.kwarg:
            args.kwarg.annotation = None

    def _stmts(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in stmts:
            r = self.visit(s)
            if r is None:
                continue
            out.extend(r if isinstance(r, list) else [r])
        return out or [ast.Pass()]

    # ---- loops --------------------------------------------------------------------------
    def visit_For(self, node: ast.For) -> ast.For:
        k = A.cost(node.body) + A.cost(node.target)
        node.iter = self.visit(node.iter)
        node.body = [self._tick_stmt(k)] + self._stmts(node.body)
        node.orelse = self._stmts(node.orelse) if node.orelse else []
        return node

    def visit_While(self, node: ast.While) -> ast.While:
        k = A.cost(node.body) + A.cost(node.test)
        node.test = self.visit(node.test)
        node.body = [self._tick_stmt(k)] + self._stmts(node.body)
        node.orelse = self._stmts(node.orelse) if node.orelse else []
        return node

    def _comp(self, node: ast.ListComp | ast.DictComp) -> ast.expr:
        costs = A.comp_costs(node)
        for g, k in zip(node.generators, costs):
            g.iter = self.visit(g.iter)
            g.ifs = [self._tick_expr(k)] + [self.visit(i) for i in g.ifs]
        if isinstance(node, ast.DictComp):
            node.key = self.visit(node.key)
            node.value = self.visit(node.value)
        else:
            node.elt = self.visit(node.elt)
        return node

    def visit_ListComp(self, node: ast.ListComp) -> ast.expr:
        return self._comp(node)

    def visit_DictComp(self, node: ast.DictComp) -> ast.expr:
        return self._comp(node)

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.expr:
        lc = ast.copy_location(ast.ListComp(elt=node.elt, generators=node.generators), node)
        return self._comp(lc)

    # ---- expressions --------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        name = A.BINOPS.get(type(node.op))
        if name is None:
            return node
        if name in ("add", "sub", "bitor") and (
                A.is_small_int(node.left) or A.is_small_int(node.right)):
            return node
        slow = A.call(name, node.left, node.right)
        if name in ("add", "sub", "mul"):
            ga, gb = A.small_int_guards(node.left), A.small_int_guards(node.right)
            if ga is not None and gb is not None:
                fast = ast.BinOp(left=A.load_copy(node.left), op=node.op, right=A.load_copy(node.right))
                return ast.copy_location(A.fast_or_helper(ga + gb, fast, slow), node)
        if name in ("mod", "floordiv") and isinstance(node.left, ast.Name) and isinstance(
                node.right, (ast.Name, ast.Constant)):
            # a small int dividend makes division O(1) whatever the divisor
            fast = ast.BinOp(left=A.load_name(node.left), op=node.op, right=A.load_copy(node.right))
            guards = A.small_int_guards(node.left) or []
            return ast.copy_location(A.fast_or_helper(guards, fast, slow), node)
        return ast.copy_location(slow, node)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        operands = [node.left] + node.comparators
        unsafe = []
        for i, op in enumerate(node.ops):
            if isinstance(op, (ast.Is, ast.IsNot)):
                unsafe.append(False)
            elif isinstance(op, (ast.In, ast.NotIn)):
                unsafe.append(True)
            else:
                unsafe.append(not (A.is_scalar_literal(operands[i])
                                   or A.is_scalar_literal(operands[i + 1])))
        if not any(unsafe):
            return node
        if len(node.ops) == 1:
            slow = A.call(A.CMPOPS[type(node.ops[0])], *operands)
            a, b = operands
            if isinstance(a, ast.Name) and isinstance(b, ast.Name) and not isinstance(
                    node.ops[0], (ast.In, ast.NotIn)):
                fast = ast.Compare(left=A.load_name(a), ops=node.ops, comparators=[A.load_name(b)])
                return ast.copy_location(A.fast_or_helper(
                    [A.is_int_class(a), A.is_int_class(b)], fast, slow), node)
            return ast.copy_location(slow, node)
        ops = ast.Tuple(elts=[A.const(A.CMPOPS[type(op)]) for op in node.ops], ctx=ast.Load())
        return ast.copy_location(A.call("chain", ops, *operands), node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        plain_key = A.int_key(node.slice)
        self.generic_visit(node)
        if isinstance(node.slice, ast.Slice) and isinstance(node.ctx, ast.Load):
            s = node.slice
            return ast.copy_location(A.call(
                "slice", node.value, s.lower or A.const(None), s.upper or A.const(None),
                s.step or A.const(None)), node)
        if not isinstance(node.slice, ast.Slice) and not plain_key:
            node.slice = A.wrap_key(node.slice)
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        args = [self._arg(a) for a in node.args]
        kws = []
        for kw in node.keywords:
            v = self.visit(kw.value)
            if kw.arg is None:
                v = A.call("dstar", v)
            kws.append(ast.keyword(arg=kw.arg, value=v))
        if isinstance(node.func, ast.Attribute):
            obj = self.visit(node.func.value)
            if kws:
                kwd = ast.Dict(keys=[None if k.arg is None else A.const(k.arg) for k in kws],
                               values=[k.value for k in kws])
                new = ast.Call(func=A.helper("mck"), args=[obj, A.const(node.func.attr), kwd] + args,
                               keywords=[])
            else:
                new = ast.Call(func=A.helper("mc"), args=[obj, A.const(node.func.attr)] + args,
                               keywords=[])
        else:
            new = ast.Call(func=self.visit(node.func), args=args, keywords=kws)
        return ast.copy_location(new, node)

    def _arg(self, a: ast.expr) -> ast.expr:
        if isinstance(a, ast.Starred):
            return ast.Starred(value=A.call("star", self.visit(a.value)), ctx=ast.Load())
        return self.visit(a)

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        self.generic_visit(node)
        return ast.copy_location(A.call("ga", node.value, A.const(node.attr)), node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.expr:
        parts: list[ast.expr] = []
        for v in node.values:
            if isinstance(v, ast.FormattedValue):
                val = self.visit(v.value)
                parts.append(A.call("repr_", val) if v.conversion == ord("r") else val)
            else:
                parts.append(v)
        return ast.copy_location(A.call("fstr", *parts), node)

    def visit_Tuple(self, node: ast.Tuple) -> ast.expr:
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            return ast.copy_location(ast.List(elts=node.elts, ctx=ast.Load()), node)
        return node

    def visit_List(self, node: ast.List) -> ast.expr:
        node.elts = [self._arg(e) if isinstance(e, ast.Starred) and
                     isinstance(node.ctx, ast.Load) else self.visit(e) for e in node.elts]
        return node

    def visit_Dict(self, node: ast.Dict) -> ast.expr:
        node.keys = [None if k is None else self.visit(k) for k in node.keys]
        node.values = [A.call("dstar", self.visit(v)) if k is None else self.visit(v)
                       for k, v in zip(node.keys, node.values)]
        return node

    # ---- statements ---------------------------------------------------------------------
    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        # node.type names exception classes (a tuple must stay a tuple here)
        node.body = self._stmts(node.body)
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.stmt:
        node.value = self.visit(node.value)
        node.targets = [self.visit(t) for t in node.targets]
        if any(isinstance(n, ast.Starred) for t in node.targets for n in ast.walk(t)):
            node.value = A.call("star", node.value)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.stmt | None:
        if node.value is None:
            return None
        return self.visit(ast.copy_location(
            ast.Assign(targets=[node.target], value=node.value), node))

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        op = type(node.op)
        name = {ast.Add: "iadd", ast.BitOr: "ior"}.get(op) or A.BINOPS.get(op)
        node.value = self.visit(node.value)
        if name is None or (op in (ast.Add, ast.Sub) and A.is_small_int(node.value)):
            node.target = self.visit(node.target)
            return node
        t = node.target
        if isinstance(t, ast.Name):
            load = ast.Name(id=t.id, ctx=ast.Load())
            if op in (ast.Add, ast.Sub, ast.Mult):
                pre: list[ast.stmt] = []
                v = node.value
                if A.small_int_guards(v) is None:
                    pre = [ast.copy_location(ast.Assign(
                        targets=[ast.Name(id="_t", ctx=ast.Store())], value=v), node)]
                    v = ast.Name(id="_t", ctx=ast.Load())
                guards = (A.small_int_guards(load) or []) + (A.small_int_guards(v) or [])
                fast = ast.BinOp(left=A.load_name(load), op=node.op, right=A.load_copy(v))
                value = A.fast_or_helper(guards, fast, A.call(name, A.load_name(load), A.load_copy(v)))
                assign = ast.Assign(targets=[ast.Name(id=t.id, ctx=ast.Store())], value=value)
                return pre + [ast.copy_location(assign, node)]  # type: ignore[return-value]
            new: ast.stmt = ast.Assign(targets=[ast.Name(id=t.id, ctx=ast.Store())],
                                       value=A.call(name, load, node.value))
        else:  # Subscript (the validator refuses attribute and slice targets)
            assert isinstance(t, ast.Subscript)
            plain = A.int_key(t.slice)
            key = self.visit(t.slice)
            new = ast.Expr(value=A.call("augsub", self.visit(t.value),
                                       key if plain else A.wrap_key(key), A.const(name),
                                       node.value))
        return ast.copy_location(new, node)

    def visit_Delete(self, node: ast.Delete) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for t in node.targets:
            if isinstance(t, ast.Subscript):
                plain = A.int_key(t.slice)
                key = self.visit(t.slice)
                out.append(ast.copy_location(ast.Expr(value=A.call(
                    "delitem", self.visit(t.value), key if plain else A.wrap_key(key))),
                    node))
            else:
                out.append(ast.copy_location(ast.Delete(targets=[self.visit(t)]), node))
        return out


def instrument(tree: ast.Module, entries: tuple[str, ...]) -> ast.Module:
    """Return the metered module for a validated tree (consumed)."""
    body = Instrumenter()._stmts(tree.body)
    head: list[ast.stmt] = [
        ast.Assign(targets=[ast.Name(id="_S", ctx=ast.Store())],
                   value=ast.Attribute(value=A.helper("rt"), attr="steps", ctx=ast.Load())),
    ]
    head.append(ast.Assign(
        targets=[ast.Tuple(elts=[ast.Name(id="_" + h, ctx=ast.Store()) for h in HELPERS],
                           ctx=ast.Store())],
        value=ast.Attribute(value=A.helper("rt"), attr="helpers", ctx=ast.Load())))
    # _rt.bind((lambda: _S).__closure__[0]) hands the runtime the counter's cell.
    cell = ast.Subscript(value=ast.Attribute(
        value=ast.Lambda(args=_no_args(), body=ast.Name(id="_S", ctx=ast.Load())),
        attr="__closure__", ctx=ast.Load()), slice=A.const(0), ctx=ast.Load())
    head.append(ast.Expr(value=ast.Call(func=ast.Attribute(
        value=A.helper("rt"), attr="bind", ctx=ast.Load()), args=[cell], keywords=[])))
    ret = ast.Return(value=ast.Dict(keys=[A.const(e) for e in entries],
                                    values=[ast.Name(id=e, ctx=ast.Load()) for e in entries]))
    fn = ast.FunctionDef(name="_module", args=ast.arguments(
        posonlyargs=[], args=[ast.arg(arg="_rt")], vararg=None, kwonlyargs=[],
        kw_defaults=[], kwarg=None, defaults=[]), body=head + body + [ret],
        decorator_list=[], returns=None)
    mod = ast.Module(body=[fn], type_ignores=[])
    # Generated nodes inherit their parent's line, so a fault reports the source line.
    return ast.fix_missing_locations(mod)


def _no_args() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[],
                         kwarg=None, defaults=[])


def compile_source(source: str, name: str) -> tuple[Any, tuple[str, ...]]:
    """Validate, instrument and compile. Returns (code object, entry points)."""
    tree, entries = parse_checked(source)
    mod = instrument(tree, entries)
    code = compile(mod, f"<contract:{name}>", "exec", dont_inherit=True, optimize=0)
    return code, entries
