"""contracts/rekey_request.py: policy checks, durable refusals, transitions, audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pienode.execution import CallContext, Caller, MemoryState, run_call, validate

SRC = (Path(__file__).resolve().parents[2] / "contracts" / "rekey_request.py").read_text()
CODE = validate(SRC, "rekey_request")
DAY = 24 * 3600 * 1000


class World:
    def __init__(self) -> None:
        self.st = MemoryState()
        self.n = 0
        self.st.add_record({
            "record_id": "rec1", "patient_id": "pat1", "hospital_id": "h1",
            "physician_id": "doc1", "data_type": "medical_imaging",
            "security_level": "moderate", "summary": {}, "cid": "c", "version": 1,
            "created_at_ms": 0,
            "policy": {"level": "moderate", "roles": ["physician", "researcher"],
                       "purposes": ["treatment", "research"], "expires_at_ms": None}})

    def call(self, who: tuple[str, str, str], fn: str, t: int = 1000, tx: bool = True,
             **kw: Any):
        self.n += 1
        ctx = CallContext(Caller(*who), self.n, f"tx{self.n}" if tx else None, t,
                          "rekey_request")
        r = run_call(CODE, fn, kw, ctx, self.st, read_only=not tx)
        if r.ok and tx:
            self.st.apply(r.writes)
        return r


RES_MOD = ("res1", "researcher", "moderate")
RES_LOW = ("res2", "researcher", "low")
INSURER = ("ins1", "insurer", "private")
PATIENT = ("pat1", "patient", "private")
DOC = ("doc1", "physician", "private")


def test_refusal_is_durable_and_audited() -> None:
    w = World()
    r = w.call(RES_LOW, "request", record_id="rec1", purpose="research")
    assert r.ok and r.value["status"] == "refused"
    assert "low does not satisfy moderate" in r.value["reason"]
    assert r.events[0][0] == "refused" and r.writes  # committed with the tx
    for who, purpose, why in [(INSURER, "research", "role insurer"),
                              (RES_MOD, "marketing", "purpose marketing")]:
        r = w.call(who, "request", record_id="rec1", purpose=purpose)
        assert r.value["status"] == "refused" and why in r.value["reason"]
    hist = w.call(PATIENT, "history", tx=False, record_id="rec1")
    assert [h["event"] for h in hist.value] == ["refused"] * 3
    assert hist.value[0]["who"] == "res2"


def test_request_grant_flow() -> None:
    w = World()
    r = w.call(RES_MOD, "request", record_id="rec1", purpose="research")
    assert r.value == {"status": "pending", "request_id": "tx1"}
    pend = w.call(PATIENT, "pending", tx=False, patient_id="pat1")
    assert [p["request_id"] for p in pend.value] == ["tx1"]
    assert w.call(RES_MOD, "pending", tx=False, patient_id="pat1").error.startswith(
        "ContractFailed: only the patient")
    bad = w.call(RES_MOD, "grant", request_id="tx1")
    assert bad.error == "ContractFailed: only the record's patient can decide on its requests"
    g = w.call(PATIENT, "grant", request_id="tx1", expires_at_ms=5000)
    assert g.ok and g.value["status"] == "granted" and g.value["expires_at_ms"] == 5000
    assert g.events[0][0] == "granted"
    assert w.call(PATIENT, "pending", tx=False, patient_id="pat1").value == []
    assert w.call(PATIENT, "deny", request_id="tx1").error.startswith("ContractFailed")
    st = w.call(RES_MOD, "status", tx=False, t=6000, request_id="tx1")
    assert st.value["status"] == "expired"
    e = w.call(RES_MOD, "expire", t=6000, request_id="tx1")
    assert e.ok and e.value["status"] == "expired"
    mine = w.call(RES_MOD, "requests_by", tx=False, requester_id="res1")
    assert [m["status"] for m in mine.value] == ["expired"]
    events = [h["event"] for h in w.call(DOC, "history", tx=False, record_id="rec1").value]
    assert events == ["requested", "granted", "expired"]


def test_deny_and_pending_expiry() -> None:
    w = World()
    w.call(RES_MOD, "request", record_id="rec1", purpose="treatment")
    d = w.call(PATIENT, "deny", request_id="tx1", reason="no thanks")
    assert d.value["status"] == "denied" and d.value["reason"] == "no thanks"
    w.call(RES_MOD, "request", record_id="rec1", purpose="treatment")
    assert w.call(RES_MOD, "expire", request_id="tx3").error.startswith("ContractFailed")
    e = w.call(RES_MOD, "expire", t=1000 + 8 * DAY, request_id="tx3")
    assert e.ok and e.value["status"] == "expired"


def test_emergency_only_by_creating_physician() -> None:
    w = World()
    r = w.call(("doc2", "physician", "private"), "emergency", record_id="rec1",
               requester_id="er1", reason="unconscious")
    assert r.error.startswith("ContractFailed: only the record's creating physician")
    r = w.call(DOC, "emergency", record_id="rec1", requester_id="er1", reason="unconscious")
    assert r.ok and r.value["status"] == "granted" and r.value["emergency"] is True
    assert r.value["expires_at_ms"] == 1000 + DAY
    hist = w.call(PATIENT, "history", tx=False, record_id="rec1").value
    assert hist[-1]["event"] == "emergency" and hist[-1]["why"] == "unconscious"


def test_request_needs_transaction_and_known_record() -> None:
    w = World()
    r = w.call(RES_MOD, "request", tx=False, record_id="rec1", purpose="research")
    assert r.error.startswith("ContractFailed: this operation must be submitted")
    r = w.call(RES_MOD, "request", record_id="nope", purpose="research")
    assert r.error == "ContractFailed: no record nope"
    r = w.call(RES_MOD, "request", record_id="../x", purpose="research")
    assert r.error.startswith("ContractFailed: record_id")


def test_helpers_are_not_callable_from_outside() -> None:
    w = World()
    r = w.call(RES_MOD, "audit", record_id="rec1", event="granted", request_id="x", why="forged")
    assert r.error.startswith("NoSuchFunction")
