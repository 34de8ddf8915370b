"""``pie audit --fhir``: the accounting of disclosures as FHIR R4 AuditEvent resources.

One AuditEvent per audit entry (request, refusal, grant, denial, emergency access, fetch),
gathered in a Bundle of type ``collection``. Identifiers are the consortium's pseudonymous
user and record ids; nothing here names a person.
"""

from __future__ import annotations

import time
from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PIE_EVENTS = "urn:pie:audit-event"

#: event -> (FHIR action code, outcome code, DICOM event type code, display)
_EVENTS: dict[str, tuple[str, str, str, str]] = {
    "requested": ("C", "0", "110112", "Query"),
    "refused": ("E", "4", "110113", "Security Alert"),
    "granted": ("E", "0", "110136", "Security Roles Changed"),
    "denied": ("E", "0", "110136", "Security Roles Changed"),
    "expired": ("E", "0", "110136", "Security Roles Changed"),
    "emergency": ("E", "0", "110113", "Security Alert"),
    "fetch": ("R", "0", "110106", "Export"),
    "fetch_refused": ("R", "4", "110113", "Security Alert"),
}


def _instant(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def audit_event(e: dict[str, Any], patient_id: str) -> dict[str, Any]:
    action, outcome, code, display = _EVENTS.get(e["event"], ("E", "0", "110110", "Patient Record"))
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": PIE_EVENTS, "code": e["event"]}],
        "action": action,
        "recorded": _instant(int(e["at_ms"])),
        "outcome": outcome,
        "agent": [{"who": {"identifier": {"system": "urn:pie:user", "value": e["who"]}}, "requestor": True}],
        "source": {"observer": {"display": "PIE consortium ledger"}, "site": "pie"},
        "entity": [
            {"what": {"identifier": {"system": "urn:pie:record", "value": e["record_id"]}}},
            {"what": {"identifier": {"system": "urn:pie:user", "value": patient_id}},
             "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                      "display": "Patient"}},
        ],
    }
    if e.get("why"):
        resource["outcomeDesc"] = str(e["why"])[:500]
    if e["event"] == "emergency":
        resource["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": "ETREAT",
                                                   "display": "Emergency Treatment"}]}]
        if e.get("requester_id"):
            resource["agent"].append({"who": {"identifier": {"system": "urn:pie:user", "value": e["requester_id"]}},
                                      "requestor": False})
    return resource


def audit_bundle(events: list[dict[str, Any]], patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": audit_event(e, patient_id)} for e in events],
    }
