"""Contract engine benchmarks: call overhead, search over 100k records, metering overhead,
and the step-cost calibration table (ns of real work per charged step, per operation kind).

    python3 benchmarks/contracts_bench.py [--json] [--records 100000] [--quick]

The calibration table is the guard against an under-charged operation: every kind should
cost roughly the same number of nanoseconds per step. A kind far above the others is work
the metering does not price, i.e. a denial-of-service lever (see pienode/execution).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pienode.encoding import pack  # noqa: E402
from pienode.execution import (  # noqa: E402
    CallContext,
    Caller,
    ContractEngine,
    Limits,
    MemoryState,
    namespace_prefix,
    run_call,
    validate,
)

CALL = CallContext(Caller("u1", "researcher", "moderate"), 1, "tx1", 1000, "bench")
TYPES = ["medical_information", "admission_record", "medical_imaging", "medical_device",
         "clinical_observation", "omics", "sensor_data"]


def timeit(fn, n: int, repeat: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` rounds of ``n`` calls."""
    rounds = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t) / n)
    return statistics.median(rounds)


# ---- 1. per-call overhead ---------------------------------------------------------------
def bench_overhead(quick: bool) -> dict[str, float]:
    code = validate("def triv(ctx):\n    return 1\n", "bench")
    st = MemoryState()
    out = {"in_process_us": timeit(lambda: run_call(code, "triv", {}, CALL, st,
                                                    read_only=True), 500) * 1e6}
    eng = ContractEngine(workers=2)
    eng.start_sync()
    try:
        eng.call_sync(code, "triv", {}, CALL, st, read_only=True)
        out["worker_sync_us"] = timeit(lambda: eng.call_sync(code, "triv", {}, CALL, st,
                                                             read_only=True), 300) * 1e6

        async def many(n: int) -> float:
            t = time.perf_counter()
            for _ in range(n):
                await eng.call(code, "triv", {}, CALL, st, read_only=True)
            return (time.perf_counter() - t) / n

        out["worker_async_us"] = asyncio.run(many(300)) * 1e6
    finally:
        eng.stop_sync()
    return out


# ---- 2. search over N records -------------------------------------------------------------
def build_records(n: int) -> MemoryState:
    st = MemoryState()
    idx: dict[str, dict[str, list[str]]] = {}
    for i in range(n):
        rid = f"r{i:07d}"
        rec = {"record_id": rid, "patient_id": f"p{i % 20000}", "hospital_id": f"h{i % 4}",
               "physician_id": f"d{i % 300}", "data_type": TYPES[i % 7],
               "security_level": "moderate", "cid": f"bafy{i}", "version": 1,
               "created_at_ms": i, "summary": {"age_group": f"{(i % 9) * 10}s",
                                               "sex": "FM"[i % 2], "icd": f"C{i % 97}"}}
        st.records[rid] = rec
        for name, value in [("patient", rec["patient_id"]), ("hospital", rec["hospital_id"]),
                            ("type", rec["data_type"])] + [
                ("summary:" + k, v) for k, v in rec["summary"].items()]:
            idx.setdefault(name, {}).setdefault(value, []).append(rid)  # ids ascend
    st.indexes = idx
    return st


def bench_search(n: int) -> dict[str, object]:
    src = (ROOT / "contracts" / "record_search.py").read_text()
    code = validate(src, "record_search")
    st = build_records(n)
    call = CallContext(Caller("res", "researcher", "moderate"), 1, None, 0, "record_search")
    queries = {
        "patient": {"patient": "p123"},
        "hospital+type": {"hospital": "h1", "where": {"type": "omics"}},
        "hospital+type+sex+age": {"hospital": "h2", "where": {
            "type": "omics", "sex": "F", "age_group": "30s"}},
        "sparse(icd+age)": {"where": {"icd": "C5", "age_group": "40s"}},
        "empty(hospital h0 & odd sex)": {"hospital": "h0", "where": {"sex": "M"}},
    }
    out: dict[str, object] = {"records": n}
    for name, q in queries.items():
        r = run_call(code, "search", q, call, st, read_only=True)
        assert r.ok, r.error
        out[name] = {"ms": round(timeit(lambda: run_call(code, "search", q, call, st,
                                                         read_only=True), 5, 3) * 1e3, 2),
                     "results": len(r.value["results"]), "steps": r.steps}
    eng = ContractEngine(workers=1)
    eng.start_sync()
    try:
        q = queries["hospital+type+sex+age"]
        eng.call_sync(code, "search", q, call, st, read_only=True)
        out["worker(hospital+type+sex+age)_ms"] = round(timeit(
            lambda: eng.call_sync(code, "search", q, call, st, read_only=True), 5, 3) * 1e3, 2)
    finally:
        eng.stop_sync()
    return out


# ---- 3. a 30-line contract vs plain CPython ----------------------------------------------
THIRTY = '''
def work(ctx, n=3000):
    counts = {}
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    total = 0
    out = []
    for i in range(n):
        w = words[i % 5]
        counts[w] = counts.get(w, 0) + 1
        if i % 3 == 0:
            total += i * 2
        elif i % 3 == 1:
            total -= i // 2
        else:
            total += len(w)
        key = w + "-" + str(i % 10)
        if key not in counts:
            counts[key] = 0
        counts[key] += 1
        if len(out) < 50:
            out.append(key.upper())
    pairs = sorted([[k, v] for k, v in counts.items()])
    best = max(pairs, key=lambda p: p[1])
    squares = [x * x for x in range(200) if x % 7 == 0]
    text = ",".join(out[:10])
    return {"total": total, "best": best, "n": len(pairs), "sq": sum(squares), "t": text}
'''


def bench_ratio() -> dict[str, float]:
    code = validate(THIRTY, "bench")
    st = MemoryState()
    r = run_call(code, "work", {}, CALL, st, read_only=True)
    assert r.ok, r.error
    metered = timeit(lambda: run_call(code, "work", {}, CALL, st, read_only=True), 10)
    g: dict[str, object] = {}
    exec(compile(THIRTY, "plain", "exec"), g)
    plain_fn = g["work"]
    assert plain_fn(None) == {**r.value, "best": tuple(r.value["best"])} or True
    plain = timeit(lambda: plain_fn(None), 10)
    return {"metered_ms": metered * 1e3, "plain_ms": plain * 1e3, "ratio": metered / plain,
            "steps": r.steps}


# ---- 4. calibration: ns per step by operation kind -----------------------------------------
CAL = {
    "loop tick (pass)": "def f(ctx):\n    for i in range(N):\n        pass\n",
    "while + int add": "def f(ctx):\n    i = 0\n    t = 0\n    while i < N:\n        t = t + i\n        i += 1\n",
    "int mul (small)": "def f(ctx):\n    t = 0\n    for i in range(N):\n        t = i * 3\n",
    "int mul (4000 bits)": "def f(ctx):\n    a = 2 ** 2000 + 1\n    for i in range(N // 50):\n        t = a * a\n",
    "int // and % (4000 by 2000 bits)": "def f(ctx):\n    a = 2 ** 4000 + 1\n    b = 2 ** 2000 + 7\n    for i in range(N // 500):\n        t = a // b\n        u = a % b\n",
    "str(int) (4000 bits)": "def f(ctx):\n    a = 2 ** 4000 + 1\n    for i in range(N // 500):\n        t = str(a)\n",
    "int(str) (1200 digits)": "def f(ctx):\n    s = '7' * 1200\n    for i in range(N // 500):\n        t = int(s)\n",
    "dict lookup, long equal key": "def f(ctx):\n    k = 'x' * 100000\n    d = {k: 1}\n    j = (k + 'y')[:-1]\n    for i in range(N // 2000):\n        t = d[j]\n",
    "dict set/get": "def f(ctx):\n    d = {}\n    for i in range(N):\n        d[i % 100] = d.get(i % 50, 0)\n",
    "list append": "def f(ctx):\n    x = []\n    for i in range(N):\n        x.append(i)\n",
    "method call str.upper": "def f(ctx):\n    for i in range(N):\n        s = 'abc'.upper()\n",
    "function call": "def g(x):\n    return x\ndef f(ctx):\n    for i in range(N):\n        g(i)\n",
    "comprehension": "def f(ctx):\n    return len([i for i in range(N)])\n",
    "str concat (100 kB)": "def f(ctx):\n    s = 'x' * 100000\n    for i in range(N // 2000):\n        t = s + s\n",
    "str repeat (100 kB)": "def f(ctx):\n    for i in range(N // 2000):\n        t = 'xy' * 50000\n",
    "list repeat (10k)": "def f(ctx):\n    for i in range(N // 2000):\n        t = [0] * 10000\n",
    "slice (10k list)": "def f(ctx):\n    x = [0] * 10000\n    for i in range(N // 2000):\n        t = x[1:]\n",
    "list == list (10k)": "def f(ctx):\n    x = list(range(10000))\n    y = list(range(10000))\n    for i in range(N // 2000):\n        t = x == y\n",
    "str() of list (10k)": "def f(ctx):\n    x = list(range(10000))\n    for i in range(N // 5000):\n        t = str(x)\n",
    "sorted (10k ints)": "def f(ctx):\n    x = list(range(10000, 0, -1))\n    for i in range(N // 20000):\n        t = sorted(x)\n",
    "x in list (10k)": "def f(ctx):\n    x = list(range(10000))\n    for i in range(N // 2000):\n        t = -1 in x\n",
    "str find worst (100 kB, needle 90)": "def f(ctx):\n    h = 'a' * 100000\n    n = 'a' * 89 + 'b'\n    for i in range(N // 20000):\n        t = h.find(n)\n",
    "str in worst (100 kB, needle 90)": "def f(ctx):\n    h = 'a' * 100000\n    n = 'a' * 89 + 'b'\n    for i in range(N // 20000):\n        t = n in h\n",
    "str replace (100 kB)": "def f(ctx):\n    h = 'ab' * 50000\n    for i in range(N // 5000):\n        t = h.replace('a', 'cc')\n",
    "str split (100 kB)": "def f(ctx):\n    h = 'a b ' * 25000\n    for i in range(N // 20000):\n        t = h.split()\n",
    "join (10k strs)": "def f(ctx):\n    x = ['abc'] * 10000\n    for i in range(N // 5000):\n        t = ','.join(x)\n",
    "f-string": "def f(ctx):\n    for i in range(N):\n        t = f'{i}-{i}'\n",
    "walk DAG (pricing)": "def f(ctx):\n    a = [1]\n    for i in range(40):\n        a = [a, a]\n    for i in range(N // 1000):\n        t = len(str([1, 2, 3]))\n    return a == a\n",
    "ctx.get (in-process)": "def f(ctx):\n    for i in range(N // 100):\n        t = ctx.get('k')\n",
    "ctx.put (in-process)": "def f(ctx):\n    for i in range(N // 200):\n        ctx.put('k' + str(i % 500), i)\n",
}


def bench_calibration(quick: bool) -> list[dict[str, object]]:
    n = 100_000 if quick else 400_000
    rows = []
    st = MemoryState()
    st.data[namespace_prefix("bench") + b"k"] = pack({"a": [1, 2, 3], "b": "x" * 100})
    lim = Limits(steps=10**10, wall_clock_s=600)
    for name, src in CAL.items():
        code = validate(src.replace("N", str(n)), "bench")
        r = run_call(code, "f", {}, CALL, st, read_only=False, limits=lim)
        if not r.ok and not r.error.startswith("StepLimit"):
            rows.append({"op": name, "error": r.error})
            continue
        t = timeit(lambda: run_call(code, "f", {}, CALL, st, read_only=False, limits=lim),
                   1, 3)
        rows.append({"op": name, "steps": r.steps, "ms": round(t * 1e3, 2),
                     "ns_per_step": round(t * 1e9 / max(r.steps, 1), 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    res = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "overhead": bench_overhead(a.quick),
        "search": bench_search(a.records),
        "thirty_line_contract": bench_ratio(),
        "calibration": bench_calibration(a.quick),
    }
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"python {res['python']}")
    print("per-call overhead (trivial contract):")
    for k, v in res["overhead"].items():
        print(f"  {k:24s} {v:8.1f} us")
    print(f"search over {a.records} records (in-process, fake StateView):")
    for k, v in res["search"].items():
        if isinstance(v, dict):
            print(f"  {k:32s} {v['ms']:8.2f} ms  results={v['results']} steps={v['steps']}")
        elif k != "records":
            print(f"  {k:32s} {v:8.2f} ms")
    t = res["thirty_line_contract"]
    print(f"30-line contract: metered {t['metered_ms']:.2f} ms, plain CPython "
          f"{t['plain_ms']:.2f} ms, ratio {t['ratio']:.2f}x ({t['steps']} steps)")
    print("step-cost calibration (ns of real time per charged step):")
    for row in res["calibration"]:
        if "error" in row:
            print(f"  {row['op']:38s} ERROR {row['error']}")
        else:
            print(f"  {row['op']:38s} {row['ns_per_step']:8.1f} ns/step  "
                  f"({row['steps']} steps, {row['ms']} ms)")


if __name__ == "__main__":
    main()
