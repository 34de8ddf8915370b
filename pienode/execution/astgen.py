"""AST node builders and the static cost model the instrumenter uses.

Owns: small constructors of generated nodes (helper calls, guarded fast paths for small
ints, priced subscript keys) and ``cost``, the number of syntax nodes a construct evaluates
once. Must never emit a name a contract could also write: every generated name starts with
``_``, which the validator refuses in contract source.
"""

from __future__ import annotations

import ast
from typing import Any

from pienode.execution import runtime_tables as T

#: below this magnitude, + - * of two ints cannot leave the small-int range: inline them
K = 1 << 31
INT_RESULT_OPS = (ast.Sub, ast.FloorDiv, ast.Mod, ast.BitAnd, ast.BitOr, ast.BitXor,
                   ast.RShift, ast.LShift, ast.Pow)
BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Pow: "pow",
           ast.LShift: "lshift", ast.Mod: "mod", ast.BitOr: "bitor", ast.FloorDiv: "floordiv"}
# native: >> & ^ (linear in the operands, which are capped at max_int_bits)
CMPOPS = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt",
           ast.GtE: "ge", ast.In: "contains", ast.NotIn: "not_contains"}


def helper(name: str) -> ast.Name:
    return ast.Name(id="_" + name, ctx=ast.Load())


def call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=helper(name), args=list(args), keywords=[])


def const(v: Any) -> ast.Constant:
    return ast.Constant(value=v)


def is_small_int(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return (isinstance(node, ast.Constant) and type(node.value) is int
            and abs(node.value) < (1 << 32))


def load_name(n: ast.Name) -> ast.Name:
    return ast.Name(id=n.id, ctx=ast.Load())


def is_int_class(n: ast.Name) -> ast.expr:
    # n.__class__ is _T_int  (no call: cheaper than the helper it avoids)
    return ast.Compare(left=ast.Attribute(value=load_name(n), attr="__class__", ctx=ast.Load()),
                       ops=[ast.Is()], comparators=[helper("T_int")])


def small_int_guards(n: ast.expr) -> list[ast.expr] | None:
    """Tests that ``n`` is an int below K, or None if ``n`` cannot be inlined."""
    if is_small_int(n):
        lit = n.operand if isinstance(n, ast.UnaryOp) else n
        return [] if abs(getattr(lit, "value")) < K else None
    if isinstance(n, ast.Name):
        return [is_int_class(n), ast.Compare(left=const(-K), ops=[ast.Lt(), ast.Lt()],
                                              comparators=[load_name(n), const(K)])]
    return None


def load_copy(n: ast.expr) -> ast.expr:
    return load_name(n) if isinstance(n, ast.Name) else n


def fast_or_helper(guards: list[ast.expr], fast: ast.expr, slow: ast.expr) -> ast.expr:
    if not guards:
        return fast
    test = guards[0] if len(guards) == 1 else ast.BoolOp(op=ast.And(), values=guards)
    return ast.IfExp(test=test, body=fast, orelse=slow)


def is_scalar_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and (
        node.value is None or type(node.value) in (bool, int, str))


def int_key(k: ast.expr) -> bool:
    """True for an (untransformed) key that is a short literal or surely not a str."""
    if isinstance(k, ast.Constant):
        return not (isinstance(k.value, str) and len(k.value) > 64)
    return isinstance(k, ast.UnaryOp) or (isinstance(k, ast.BinOp)
                                          and isinstance(k.op, INT_RESULT_OPS))


def wrap_key(k: ast.expr) -> ast.expr:
    """A subscript key, priced when it may be a long str (compared by content on a hash
    hit, which no step would otherwise pay for)."""
    if isinstance(k, ast.Constant) and not (isinstance(k.value, str) and len(k.value) > 64):
        return k
    if isinstance(k, ast.Name):
        return ast.IfExp(test=is_int_class(k), body=load_name(k), orelse=call("kc", load_name(k)))
    return call("kc", k)


# ---- static cost -------------------------------------------------------------------------
def cost(node: ast.AST | list[Any] | None) -> int:
    """Syntax nodes evaluated once when ``node`` runs, excluding work charged elsewhere
    (loop bodies per iteration, function/lambda bodies per call, comprehension elements)."""
    if node is None:
        return 0
    if isinstance(node, list):
        return sum(cost(n) for n in node)
    if isinstance(node, ast.FunctionDef):
        return 1 + cost(node.args.defaults) + cost(node.args.kw_defaults)
    if isinstance(node, ast.Lambda):
        return 1 + cost(node.args.defaults) + cost(node.args.kw_defaults)
    if isinstance(node, ast.For):
        return 1 + cost(node.iter) + cost(node.orelse)
    if isinstance(node, ast.While):
        return 1 + cost(node.test) + cost(node.orelse)
    if isinstance(node, (ast.ListComp, ast.DictComp, ast.GeneratorExp)):
        return 1 + cost(node.generators[0].iter)
    if isinstance(node, (ast.expr_context, ast.operator, ast.cmpop, ast.unaryop,
                         ast.boolop)):
        return 0
    extra = 0
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        extra = T.METHOD_CALL
    elif isinstance(node, ast.FormattedValue):
        extra = T.FSTRING_FIELD
    return 1 + extra + sum(cost(c) for c in ast.iter_child_nodes(node))


def comp_costs(node: ast.ListComp | ast.DictComp) -> list[int]:
    gens = node.generators
    out = []
    for i, g in enumerate(gens):
        c = 1 + cost(g.target) + cost(g.ifs)
        if i + 1 < len(gens):
            c += cost(gens[i + 1].iter)
        elif isinstance(node, ast.DictComp):
            c += cost(node.key) + cost(node.value)
        else:
            c += cost(node.elt)
        out.append(c)
    return out
