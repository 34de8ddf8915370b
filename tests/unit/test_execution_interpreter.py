"""In-process interpreter: semantics of the subset, metering, ctx door, error mapping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pienode.encoding import unpack
from pienode.execution import (
    CallContext,
    Caller,
    Limits,
    MemoryState,
    namespace_prefix,
    run_call,
    validate,
)

CALL = CallContext(Caller("u1", "physician", "moderate"), 7, "tx-1", 1234, "demo")
ROOT = Path(__file__).resolve().parents[2]


def run(src: str, fn: str = "f", state: MemoryState | None = None, read_only: bool = False,
        limits: Limits = Limits(), **kwargs: object):
    code = validate(src, "demo")
    return run_call(code, fn, kwargs, CALL, state or MemoryState(), read_only=read_only,
                    limits=limits)


def test_values_and_semantics() -> None:
    src = '''
def f(ctx, n=5):
    acc = []
    for i in range(n):
        if i % 2 == 0:
            acc.append(i * i)
    d = {"a": 1}
    d["b"] = d.get("a", 0) + 1
    words = "b a c".split()
    words.sort()
    a, b = divmod(17, 5)
    pair = (1, 2)
    return {"acc": acc, "d": d, "w": "-".join(words), "q": [a, b], "pair": pair,
            "s": str(acc), "in": 4 in acc, "slice": acc[1:], "neg": -n, "pw": 2 ** 10,
            "m": max(acc), "sorted": sorted(["x", "b"]), "chain": 0 <= n < 10}
'''
    r = run(src)
    assert r.ok, r.error
    assert r.value == {"acc": [0, 4, 16], "d": {"a": 1, "b": 2}, "w": "a-b-c", "q": [3, 2],
                       "pair": [1, 2], "s": "[0, 4, 16]", "in": True, "slice": [4, 16],
                       "neg": -5, "pw": 1024, "m": 16, "sorted": ["b", "x"], "chain": True}
    assert r.steps > 0


def test_ctx_fields_and_state_roundtrip() -> None:
    src = '''
def f(ctx):
    ctx.put("k/1", {"x": [1, "two", None, True]})
    ctx.put("k/2", 2)
    ctx.delete("k/2")
    ctx.emit("done", {"n": 1})
    return [ctx.caller.user_id, ctx.caller.role, ctx.caller.security_level, ctx.height,
            ctx.tx_id, ctx.timestamp, ctx.contract, ctx.get("k/1"), ctx.get("k/2", "gone"),
            ctx.scan("k/")]
'''
    r = run(src)
    assert r.ok, r.error
    assert r.value == ["u1", "physician", "moderate", 7, "tx-1", 1234, "demo",
                       {"x": [1, "two", None, True]}, "gone",
                       [["k/1", {"x": [1, "two", None, True]}]]]
    p = namespace_prefix("demo")
    assert r.writes == ((p + b"k/1", r.writes[0][1]), (p + b"k/2", None))
    assert unpack(r.writes[0][1]) == {"x": [1, "two", None, True]}
    assert r.events == (("done", {"n": 1}),)


def test_scan_merges_overlay_and_paginates() -> None:
    st = MemoryState()
    p = namespace_prefix("demo")
    from pienode.encoding import pack

    for i in range(5):
        st.data[p + f"a/{i}".encode()] = pack(i)
    st.data[namespace_prefix("other") + b"a/9"] = pack(99)
    src = '''
def f(ctx):
    ctx.delete("a/1")
    ctx.put("a/7", 7)
    first = ctx.scan("a/", limit=3)
    rest = ctx.scan("a/", start_after=first[-1][0], limit=10)
    return [first, rest]
'''
    r = run(src, state=st)
    assert r.ok, r.error
    assert r.value == [[["a/0", 0], ["a/2", 2], ["a/3", 3]], [["a/4", 4], ["a/7", 7]]]


@pytest.mark.parametrize("key", ["../x", "/abs", "a\x00b", "", "x" * 201, "caf\u00e9", 5,
                                 "a/../b"])
def test_bad_keys_refused(key: object) -> None:
    r = run("def f(ctx, k=None):\n    return ctx.get(k)\n", k=key)
    assert not r.ok and r.error.startswith("BadStateAccess"), r.error


def test_write_in_read_only_call() -> None:
    r = run("def f(ctx):\n    ctx.put('a', 1)\n", read_only=True)
    assert r.error == ("ReadOnlyViolation: state writes are not allowed in a read-only call "
                       "at line 2")
    assert r.writes == ()


def test_fail_is_deterministic_rejection() -> None:
    r = run("def f(ctx):\n    ctx.put('a', 1)\n    ctx.fail('no\\nway')\n")
    assert not r.ok and r.error == "ContractFailed: no way"


def test_contract_cannot_catch_its_own_abort() -> None:
    src = '''
def f(ctx):
    try:
        while True:
            pass
    except (ValueError, TypeError, ArithmeticError, LookupError, AssertionError):
        return "caught"
'''
    r = run(src, limits=Limits(steps=10_000))
    assert r.error.startswith("StepLimitExceeded") and r.steps == 10_000


def test_faults_report_class_and_line() -> None:
    r = run("def f(ctx):\n    x = {}\n    return x['missing']\n")
    assert r.error == "ContractFault: KeyError at line 3 ('missing')"
    r = run("def f(ctx):\n    return 1 + 'a'\n")
    assert r.error.startswith("ContractFault: TypeError at line 2")


def test_no_address_leaks_in_errors() -> None:
    r = run("def f(ctx):\n    g = lambda: 1\n    raise ValueError(g)\n")
    assert r.error == "ContractFault: ValueError at line 3"
    r = run("def f(ctx):\n    g = lambda: 1\n    return str(g)\n")
    assert r.error.startswith("SandboxViolation")


def test_bad_arguments() -> None:
    assert run("def f(ctx, a):\n    return a\n").error == "BadArguments: f() missing argument 'a'"
    assert run("def f(ctx, a=1):\n    return a\n", b=2).error.startswith("BadArguments")
    assert run("def f(ctx, **kw):\n    return kw\n", b=2).value == {"b": 2}


def test_steps_identical_across_runs() -> None:
    src = "def f(ctx):\n    return sum([i * i for i in range(1000)])\n"
    a, b = run(src), run(src)
    assert a == b and a.value == 332833500


def test_result_must_be_json_like() -> None:
    r = run("def f(ctx):\n    return {1: 2}\n")
    assert r.error.startswith("BadStateAccess")


def test_state_value_size_limit() -> None:
    r = run("def f(ctx):\n    ctx.put('a', 'x' * 100000)\n")
    assert r.error.startswith("SizeLimitExceeded: state value")


SEED_PROBE = '''
import json, sys
from pienode.execution import *
src = open(sys.argv[1]).read()
code = validate(src, "demo")
call = CallContext(Caller("u1", "physician", "moderate"), 7, "tx-1", 1234, "demo")
out = []
for fn in ("mix", "boom"):
    r = run_call(code, fn, {}, call, MemoryState(), read_only=False)
    out.append([r.ok, r.value, r.error, r.steps, [[k.hex(), None if v is None else v.hex()]
                for k, v in r.writes]])
print(json.dumps(out))
'''

SEED_CONTRACT = '''
def mix(ctx):
    d = {}
    for i in range(300):
        d["k" + str(i * 7919 % 1000)] = i
    keys = list(d.keys())
    words = sorted([k for k in keys if "1" in k])
    ctx.put("w", words[:20])
    return {"n": len(d), "first": keys[:5], "w": words[:5], "s": str(d)[:80]}
def boom(ctx):
    x = [1]
    while True:
        x = x + x
'''


def test_determinism_across_hash_seeds(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(SEED_PROBE)
    contract = tmp_path / "c.py"
    contract.write_text(SEED_CONTRACT)
    outs = set()
    for seed in ("0", "1", "12345", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        res = subprocess.run([sys.executable, str(probe), str(contract)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        outs.add(res.stdout)
    assert len(outs) == 1
    data = json.loads(outs.pop())
    assert data[0][0] is True and data[1][2].startswith("SizeLimitExceeded")


def test_inline_fast_paths_keep_python_semantics() -> None:
    src = '''
def f(ctx):
    a = [1]
    b = a
    a += [2]
    n = 7
    n *= 3
    n -= 1
    m = 3037000499
    big = m * m
    s = "ab"
    s *= 2
    t = n % 4
    u = s % ()
    return [b, n, big, s, t, n < m, s < "b", [1, 2] < [1, 3], 10 ** 2]
'''
    r = run(src)
    assert r.error.startswith("SandboxViolation: string % formatting")
    r = run(src.replace("    u = s % ()\n", ""))
    assert r.ok, r.error
    assert r.value == [[1, 2], 20, 3037000499 ** 2, "abab", 0, True, True, True, 100]


def test_method_keywords_and_sorting() -> None:
    src = '''
def f(ctx):
    x = [[2, "b"], [1, "a"], [3, "c"]]
    x.sort(key=lambda p: p[0], reverse=True)
    words = "a,b,c".split(",", maxsplit=1)
    return [x, words, sorted([3, 1, 2], reverse=True), min([4, 2, 9]), max(["a", "bb"], key=len)]
'''
    r = run(src)
    assert r.ok, r.error
    assert r.value == [[[3, "c"], [2, "b"], [1, "a"]], ["a", "b,c"], [3, 2, 1], 2, "bb"]


def test_long_string_keys_are_priced() -> None:
    src = '''
def f(ctx, n=500):
    k = "x" * 200000
    d = {k: 1}
    j = (k + "y")[:-1]
    t = 0
    for i in range(n):
        t += d[j]
    return t
'''
    cheap = run(src.replace('"x" * 200000', '"x" * 10'))
    dear = run(src)
    assert cheap.ok and dear.ok and dear.value == 500
    assert dear.steps > cheap.steps + 500 * (200000 // 32)


def test_json_floats_in_arguments_are_refused_cleanly() -> None:
    r = run("def f(ctx, x=None):\n    return x\n", x=1.5)
    assert r.error == "BadArguments: a float value cannot cross the contract boundary"
