"""contracts/record_search.py: AND-ed index conditions, pagination, no identifying fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from pienode.execution import CallContext, Caller, MemoryState, run_call, validate

SRC = (Path(__file__).resolve().parents[2] / "contracts" / "record_search.py").read_text()
CODE = validate(SRC, "record_search")
CALL = CallContext(Caller("res-1", "researcher", "moderate"), 10, None, 5000, "record_search")
TYPES = ["omics", "medical_imaging", "sensor_data"]


class CountingState(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self.index_calls = 0
        self.scans = 0

    def index(self, name, value, after, limit):  # type: ignore[override]
        self.index_calls += 1
        return super().index(name, value, after, limit)

    def scan(self, prefix, start_after, limit):  # type: ignore[override]
        self.scans += 1
        return super().scan(prefix, start_after, limit)


@pytest.fixture(scope="module")
def state() -> CountingState:
    st = CountingState()
    for i in range(600):
        st.add_record({
            "record_id": f"r{i:05d}", "patient_id": f"p{i % 50}", "hospital_id": f"h{i % 4}",
            "physician_id": "doc", "data_type": TYPES[i % 3], "security_level": "moderate",
            "summary": {"age_group": f"{(i % 7) * 10}s", "sex": "F" if i % 2 else "M"},
            "cid": f"bafy{i}", "version": 1, "created_at_ms": 1000 + i, "capsule": b"k"})
    return st


def search(state: MemoryState, **kw: object):
    r = run_call(CODE, "search", kw, CALL, state, read_only=True)
    assert r.ok, r.error
    return r.value


def expected(pred) -> list[str]:
    return [f"r{i:05d}" for i in range(600) if pred(i)]


def test_single_and_anded_conditions(state: CountingState) -> None:
    v = search(state, patient="p7", limit=100)
    assert [r["record_id"] for r in v["results"]] == expected(lambda i: i % 50 == 7)
    v = search(state, hospital="h1", where={"type": "omics", "sex": "F"}, limit=100)
    assert [r["record_id"] for r in v["results"]] == expected(
        lambda i: i % 4 == 1 and i % 3 == 0 and i % 2 == 1)
    assert state.scans == 0  # indexes only, never a state scan


def test_pagination_covers_everything_once(state: CountingState) -> None:
    want = expected(lambda i: i % 4 == 2 and (i % 7) == 3)
    got: list[str] = []
    after = None
    for _ in range(50):
        v = search(state, hospital="h2", where={"age_group": "30s"}, after=after, limit=7)
        got += [r["record_id"] for r in v["results"]]
        after = v["next"]
        if after is None:
            break
    assert got == want


def test_answers_do_not_identify(state: CountingState) -> None:
    v = search(state, patient="p3", limit=1)
    rec = v["results"][0]
    assert set(rec) == {"record_id", "data_type", "security_level", "summary", "hospital_id",
                        "created_at_ms", "version"}
    assert "patient_id" not in rec and "cid" not in rec


def test_empty_intersection_and_no_condition(state: CountingState) -> None:
    v = search(state, patient="p1", hospital="h0")  # p1 only at i%50==1 -> odd -> never h0
    assert v["results"] == [] and v["next"] is None
    r = run_call(CODE, "search", {}, CALL, state, read_only=True)
    assert r.error.startswith("ContractFailed: search needs at least one condition")


def test_genesis_bundles_both_contracts() -> None:
    from pienode.execution import genesis_contracts

    codes = genesis_contracts()
    assert set(codes) >= {"record_search", "rekey_request"}
    assert codes["record_search"].entry_points == ("search",)
    assert {"request", "grant", "deny", "emergency", "expire", "status", "pending",
            "history"} <= set(codes["rekey_request"].entry_points)
