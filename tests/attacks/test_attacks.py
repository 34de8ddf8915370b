"""The attack corpus: every case in cases/ is refused at deploy or fails cleanly in a worker.

Each case file starts with header comments:
    # attack: what it tries
    # expect: refused <rule> | error <Class>[|<Class>...] | ok
    # call: <fn> [ro]            (optional; default: f, state-changing)
A runtime case must end with its expected deterministic error class, in one line, within
30 seconds, without taking the worker pool down (a trivial call after it still answers).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pienode.encoding import pack
from pienode.execution import (
    CallContext,
    Caller,
    ContractEngine,
    ContractRefused,
    MemoryState,
    namespace_prefix,
    validate,
)

CASES = sorted((Path(__file__).parent / "cases").glob("*.py"))
CALL = CallContext(Caller("mallory", "researcher", "low"), 1, "tx-attack", 1, "attack")
PROBE = validate("def ping(ctx):\n    return 'pong'\n", "probe")


def header(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if not line.startswith("# "):
            break
        k, _, v = line[2:].partition(":")
        out[k.strip()] = v.strip()
    return out


@pytest.fixture(scope="module")
def engine():
    eng = ContractEngine(workers=2)
    eng.start_sync()
    yield eng
    eng.stop_sync()


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_attack(path: Path, engine: ContractEngine) -> None:
    src = path.read_text()
    h = header(src)
    kind, _, arg = h["expect"].partition(" ")
    if kind == "refused":
        with pytest.raises(ContractRefused) as info:
            validate(src, "attack")
        err = info.value
        assert err.rule in arg.split("|"), str(err)
        assert err.line >= 0 and "\n" not in str(err)
        return
    code = validate(src, "attack")
    fn, _, mode = h.get("call", "f").partition(" ")
    state = MemoryState()
    state.data[namespace_prefix("attackx") + b"secret"] = pack("other contract's data")
    state.data[namespace_prefix("other") + b"k"] = pack("other")
    t0 = time.monotonic()
    r = engine.call_sync(code, fn, {}, CALL, state, read_only=(mode == "ro"))
    elapsed = time.monotonic() - t0
    assert elapsed < 30, elapsed
    if kind == "ok":
        assert r.ok, r.error
        if path.stem == "ns_scan_isolated":
            assert r.value == []
        return
    assert not r.ok and r.error is not None
    assert not r.local_fault, r.error
    assert r.error_class in arg.split("|"), r.error
    assert "\n" not in r.error and "0x" not in r.error and len(r.error) <= 300
    assert r.writes == () or r.ok
    again = engine.call_sync(PROBE, "ping", {}, CALL, MemoryState(), read_only=True)
    assert again.value == "pong"
