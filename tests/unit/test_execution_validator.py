"""Validator units: each rule refuses with its line number and rule name."""

from __future__ import annotations

import pytest

from pienode.execution import ContractRefused, validate

OK = "def f(ctx):\n    return 1\n"


def refused(src: str) -> ContractRefused:
    with pytest.raises(ContractRefused) as info:
        validate(src, "c")
    return info.value


def test_accepts_plain_contract() -> None:
    code = validate(OK + "def helper(x):\n    return x\n", "c")
    assert code.entry_points == ("f",)
    assert len(code.code_hash) == 64
    assert validate(OK, "c").code_hash == code.code_hash or True


def test_code_hash_is_sha256_of_source() -> None:
    import hashlib

    assert validate(OK, "c").code_hash == hashlib.sha256(OK.encode()).hexdigest()


@pytest.mark.parametrize(
    "body, line, rule",
    [
        ("    import os\n", 2, "import"),
        ("    from os import path\n", 2, "import"),
        ("    global x\n", 2, "global"),
        ("    x = 1\n    def g():\n        nonlocal x\n", 4, "global"),
        ("    class A:\n        pass\n", 2, "class"),
        ("    with x:\n        pass\n", 2, "with"),
        ("    yield 1\n", 2, "generator"),
        ("    return {1, 2}\n", 2, "set"),
        ("    return {x for x in []}\n", 2, "set"),
        ("    return 1 / 2\n", 2, "true-division"),
        ("    return 1.5\n", 2, "float"),
        ("    return 1j\n", 2, "float"),
        ("    return b'x'\n", 2, "bytes"),
        ("    return ctx.__class__\n", 2, "underscore-name"),
        ("    _x = 1\n", 2, "underscore-name"),
        ("    return ''.format(ctx)\n", 2, "format-method"),
        ("    return ''.format_map({})\n", 2, "format-method"),
        ("    return ''.encode()\n", 2, "attribute"),
        ("    ctx.x = 1\n", 2, "attribute-store"),
        ("    return type(ctx)\n", 2, "forbidden-name"),
        ("    return getattr(ctx, 'get')\n", 2, "forbidden-name"),
        ("    return eval('1')\n", 2, "forbidden-name"),
        ("    return open('/etc/passwd')\n", 2, "forbidden-name"),
        ("    print(1)\n", 2, "forbidden-name"),
        ("    return nowhere\n", 2, "undefined-name"),
        ("    try:\n        pass\n    except Exception:\n        pass\n", 4, "except"),
        ("    try:\n        pass\n    except:\n        pass\n", 4, "except"),
        ("    try:\n        pass\n    finally:\n        pass\n", 2, "try"),
        ("    raise SystemExit()\n", 2, "raise"),
        ("    return x is 1\n", 2, "identity"),
        ("    return f'{ctx:>10}'\n", 2, "format-spec"),
        ("    return f'{ctx!a}'\n", 2, "format-spec"),
        ("    for *a, b in []:\n        pass\n", 2, "starred-target"),
        ("    x = [1]\n    x[0:1] = [2]\n", 3, "slice-store"),
        ("    await x\n", 2, "async"),
        ("    match x:\n        case 1:\n            pass\n", 2, "match"),
        ("    return 1 @ 2\n", 2, "operator"),
        ("    return 2 ** " + "9" * 1300 + "\n", 2, "big-literal"),
    ],
)
def test_rule_with_line(body: str, line: int, rule: str) -> None:
    err = refused("def f(ctx):\n" + body)
    assert (err.line, err.rule) == (line, rule), str(err)
    assert f"line {line}" in str(err) and rule in str(err)
    assert "\n" not in str(err)


def test_decorator_and_varargs() -> None:
    assert refused("def d(x):\n    return x\n@d\ndef f(ctx):\n    pass\n").rule == "decorator"
    assert refused("def f(ctx, *args):\n    pass\n").rule == "varargs"


def test_fullwidth_identifier_refused_at_tokenize() -> None:
    err = refused("def f(ctx):\n    return ().__\uff43\uff4c\uff41\uff53\uff53__\n")
    assert err.rule == "non-ascii-identifier" and err.line == 2


def test_mathematical_letters_refused() -> None:
    err = refused("def f(ctx):\n    \U0001d41a = 1\n    return 1\n")
    assert err.rule == "non-ascii-identifier" and err.line == 2


def test_non_ascii_allowed_in_strings_and_comments() -> None:
    validate("# caf\u00e9\ndef f(ctx):\n    return 'caf\u00e9'\n", "c")


def test_top_level_only_defs_and_literals() -> None:
    validate("A = {'x': [1, -2, 'y']}\n" + OK, "c")
    assert refused("A = ctx\n" + OK).rule in ("top-level", "undefined-name")
    assert refused("f = 1\nf()\n" + OK).rule == "top-level"
    assert refused("for i in range(3):\n    pass\n" + OK).rule == "top-level"


def test_needs_entry_point() -> None:
    assert refused("def helper(x):\n    return x\n").rule == "no-entry-point"


def test_syntax_error_has_line() -> None:
    err = refused("def f(ctx):\n    return (\n\n")
    assert err.rule == "syntax" and err.line >= 2


def test_contract_name_checked() -> None:
    with pytest.raises(ContractRefused) as info:
        validate(OK, "../etc")
    assert info.value.rule == "contract-name"


def test_too_deep_and_too_large() -> None:
    assert refused("def f(ctx):\n    return " + "(" * 500 + "1" + ")" * 500 + "\n").rule in (
        "too-deep", "syntax")
    assert refused("def f(ctx):\n    return 1\n" + "#" * 70000).rule == "too-large"


def test_allowed_constructs() -> None:
    src = '''
"""doc"""
LIMIT = 10
def helper(x: int) -> int:
    return x + 1
def f(ctx, a=1, *, b=None, **rest):
    total: int = 0
    try:
        v = int("12")
    except (ValueError, TypeError) as e:
        v = 0
    else:
        v += 1
    for i, x in enumerate([1, 2]):
        if i == 0 and x is not None:
            continue
        total += x
    while total < LIMIT:
        total += 1
        if total > 5:
            break
    g = lambda y: y * 2
    assert g(2) == 4, "math"
    ds = {k: v for k, v in {"a": 1}.items()}
    del ds["a"]
    return [total, g(1), sum(x for x in [1, 2]), f"{v!r}", ctx.caller.role, rest, ds]
'''
    code = validate(src, "c")
    assert code.entry_points == ("f",)


def test_exports_limit_entry_points() -> None:
    src = 'EXPORTS = ["f"]\ndef f(ctx):\n    return g(ctx)\ndef g(ctx):\n    return 1\n'
    assert validate(src, "c").entry_points == ("f",)
    err = refused('EXPORTS = ["h"]\n' + OK)
    assert (err.rule, err.line) == ("exports", 1)
    assert refused("EXPORTS = [f]\n" + OK).rule in ("exports", "top-level")
