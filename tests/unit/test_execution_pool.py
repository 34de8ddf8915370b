"""Worker pool: results match the in-process interpreter; dead or hung workers are replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from pienode.execution import (
    CallContext,
    Caller,
    ContractEngine,
    Limits,
    MemoryState,
    run_call,
    validate,
)

CALL = CallContext(Caller("u1", "physician", "moderate"), 3, "tx-9", 99, "demo")
SRC = '''
def bump(ctx, by=1):
    n = ctx.get("n", 0)
    ctx.put("n", n + by)
    ctx.emit("bumped", {"n": n + by})
    return {"was": n, "scan": ctx.scan(""), "rec": ctx.record("r1"),
            "idx": ctx.index("patient", "p1")}
def spin(ctx):
    while True:
        pass
def hog(ctx):
    x = "a" * 200000
    out = []
    for i in range(100000):
        out.append(x + str(i))
    return len(out)
'''


@pytest.fixture
def engine():
    eng = ContractEngine(workers=2)
    eng.start_sync()
    yield eng
    eng.stop_sync()


def _state() -> MemoryState:
    st = MemoryState()
    st.add_record({"record_id": "r1", "patient_id": "p1", "hospital_id": "h1",
                   "data_type": "omics", "summary": {"age": "40"}, "capsule": b"\x01\x02"})
    return st


def test_worker_matches_in_process(engine: ContractEngine) -> None:
    code = validate(SRC, "demo")
    a = engine.call_sync(code, "bump", {"by": 2}, CALL, _state(), read_only=False)
    b = run_call(code, "bump", {"by": 2}, CALL, _state(), read_only=False)
    assert a.ok, a.error
    assert a == b
    assert a.value["rec"]["capsule"] == "0102" and a.value["idx"] == ["r1"]


def test_step_limit_in_worker(engine: ContractEngine) -> None:
    code = validate(SRC, "demo")
    r = engine.call_sync(code, "spin", {}, CALL, _state(), read_only=True,
                         limits=Limits(steps=200_000))
    assert r.error == "StepLimitExceeded: step budget of 200000 exhausted at line 9"
    assert not r.local_fault and r.steps == 200_000


def test_killed_worker_is_replaced(engine: ContractEngine) -> None:
    code = validate(SRC, "demo")
    lim = Limits(steps=10**12, wall_clock_s=20)
    result = {}

    def victim() -> None:
        result["r"] = engine.call_sync(code, "spin", {}, CALL, _state(), read_only=True,
                                       limits=lim)

    import threading

    t = threading.Thread(target=victim)
    t.start()
    deadline = time.monotonic() + 10
    busy = []
    while time.monotonic() < deadline and not busy:
        busy = [w for w in engine._all if w not in list(engine._idle.queue)]
        time.sleep(0.01)
    assert busy
    time.sleep(0.2)
    os.kill(busy[0].proc.pid, signal.SIGKILL)
    t.join(15)
    r = result["r"]
    assert r.error.startswith("InternalError: WorkerCrashed") and r.local_fault
    ok = engine.call_sync(code, "bump", {}, CALL, _state(), read_only=False)
    assert ok.ok and engine.replaced == 1


def test_hung_worker_times_out_and_is_replaced(engine: ContractEngine) -> None:
    code = validate(SRC, "demo")
    t0 = time.monotonic()
    r = engine.call_sync(code, "spin", {}, CALL, _state(), read_only=True,
                         limits=Limits(steps=10**12, wall_clock_s=1.0))
    assert r.error.startswith("InternalError: WorkerTimeout") and r.local_fault
    assert time.monotonic() - t0 < 8
    assert engine.call_sync(code, "bump", {}, CALL, _state(), read_only=False).ok


def test_memory_blowup_is_contained(engine: ContractEngine) -> None:
    code = validate(SRC, "demo")
    r = engine.call_sync(code, "hog", {}, CALL, _state(), read_only=True)
    # the step budget trips before the memory: 100k x 200 kB would be 20 GB
    assert r.error.startswith("StepLimitExceeded"), r.error
    assert engine.call_sync(code, "bump", {}, CALL, _state(), read_only=False).ok


async def test_async_calls_run_concurrently_on_the_pool() -> None:
    eng = ContractEngine(workers=2)
    await eng.start()
    try:
        code = validate(SRC, "demo")
        results = await asyncio.gather(*[
            eng.call(code, "bump", {"by": i}, CALL, _state(), read_only=False)
            for i in range(6)])
        assert [r.value["was"] for r in results] == [0] * 6
        assert all(r.ok for r in results)
    finally:
        await eng.stop()


def test_address_space_rlimit_is_a_local_fault() -> None:
    # With an absurd step budget the memory rlimit is what stops the call: node-local.
    eng = ContractEngine(workers=1, limits=Limits(memory_bytes=400 * 1024 * 1024))
    eng.start_sync()
    try:
        code = validate("def f(ctx):\n    x = []\n    while True:\n"
                        "        x.append('y' * 100000 + str(len(x)))\n", "demo")
        r = eng.call_sync(code, "f", {}, CALL, _state(), read_only=True,
                          limits=Limits(steps=10**13, max_len=10**9, wall_clock_s=30))
        assert r.error.startswith("InternalError"), r.error
        assert r.local_fault
        ok = eng.call_sync(validate(SRC, "demo"), "bump", {}, CALL, _state(),
                           read_only=False)
        assert ok.ok
    finally:
        eng.stop_sync()


def test_cpu_rlimit_kills_runaway_worker() -> None:
    eng = ContractEngine(workers=1)
    eng.start_sync()
    try:
        code = validate(SRC, "demo")
        t0 = time.monotonic()
        r = eng.call_sync(code, "spin", {}, CALL, _state(), read_only=True,
                          limits=Limits(steps=10**13, cpu_s=1, wall_clock_s=30))
        assert r.error.startswith("InternalError: WorkerCrashed"), r.error
        assert time.monotonic() - t0 < 20
        assert eng.call_sync(code, "bump", {}, CALL, _state(), read_only=False).ok
    finally:
        eng.stop_sync()


def test_worker_is_locked_down(engine: ContractEngine) -> None:
    code = validate(SRC, "demo")
    assert engine.call_sync(code, "bump", {}, CALL, _state(), read_only=False).ok
    pid = next(iter(engine._all)).proc.pid

    def nofile() -> int:
        limits = open(f"/proc/{pid}/limits").read()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        return int(row.split()[3])

    def free_slots() -> int:
        return nofile() - len(os.listdir(f"/proc/{pid}/fd"))

    deadline = time.monotonic() + 20  # this worker may still be warming up
    while free_slots() > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert free_slots() <= 0 and nofile() < 64  # no room for a new file or socket
    limits = open(f"/proc/{pid}/limits").read()
    fsize = next(line for line in limits.splitlines() if line.startswith("Max file size"))
    assert fsize.split()[3] == "0"
    status = open(f"/proc/{pid}/status").read()
    uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]
    assert os.geteuid() != 0 or uid == "65534"
    env = open(f"/proc/{pid}/environ", "rb").read() if os.geteuid() == 0 else b""
    assert os.geteuid() != 0 or b"PYTHONHASHSEED=0" in env


def test_fingerprint_names_what_must_match() -> None:
    fp = ContractEngine.fingerprint()
    assert fp["python"] == "3.11" and fp["engine"] >= 1 and fp["unicode"]
