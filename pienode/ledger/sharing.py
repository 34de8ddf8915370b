"""EMR sharing on the ledger (design paper, Algorithm 2, done safely): grants carrying one
sealed key fragment per hospital node, record rotation, and audited record access.

The re-key request contract decides who may do what (patient-only grants, creator-only
emergency access, policy checks) and keeps the audit trail; these kinds call it and then
store what the contract must not see: the sealed key fragments, bound to the record version
they were made for. A node serves its fragment only while all of this holds on chain:
the grant exists, its request is still ``granted`` and unexpired, the record has not been
rotated past the grant's version, and the requester logged the access (``record_access``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pienode.errors import ValidationError
from pienode.execution import CallContext, Caller
from pienode.ledger import keys
from pienode.ledger.kinds import VERSION_SPEC, TxKind, TxRejected, check_version_fields, register_kind
from pienode.ledger.tx import Transaction, require_fields

if TYPE_CHECKING:
    from pienode.ledger.executor import ExecContext

REKEY_CONTRACT = "rekey_request"
GRANT_ID_RE = re.compile(r"g-[0-9a-f]{32}")


def grant_key(grant_id: str) -> bytes:
    return b"g/" + grant_id.encode()


def grant_by_key(requester_id: str, record_id: str) -> bytes:
    return b"gr/" + requester_id.encode() + b"/" + record_id.encode()


def access_prefix(record_id: str) -> bytes:
    return b"a/" + record_id.encode() + b"/"


def call_rekey(ctx: "ExecContext", tx: Transaction, fn: str, args: dict[str, Any], *, read_only: bool = False) -> Any:
    """Call the re-key request contract as the transaction's sender; refusals reject."""
    cert = ctx.sender_cert or {}
    call_ctx = CallContext(
        caller=Caller(tx.sender, cert.get("role", ""), cert.get("security_level", "low")),
        height=ctx.height, tx_id=tx.tx_id.hex(), timestamp_ms=ctx.block_timestamp_ms, contract=REKEY_CONTRACT,
    )
    from pienode.errors import InternalError
    from pienode.execution import namespace_prefix

    result = ctx.contracts.call(ctx.state, REKEY_CONTRACT, fn, args, call_ctx, read_only=read_only)
    if result.local_fault:
        raise InternalError(f"{REKEY_CONTRACT}.{fn} failed locally: {result.error}")
    if not result.ok:
        raise TxRejected(result.error_class or "refused", result.error or "refused")
    if not read_only:
        prefix = namespace_prefix(REKEY_CONTRACT)
        for k, v in result.writes:
            if not k.startswith(prefix):
                raise InternalError("engine returned a write outside the contract's namespace")
            ctx.state.put_raw(k, v)
        for name, data in result.events:
            ctx.emit(name, {"contract": REKEY_CONTRACT, **data})
    return result.value


# -- grant_access ----------------------------------------------------------------------------

GRANT_SPEC: dict[str, tuple[Any, bool]] = {
    "grant_id": (str, True),
    "record_id": (str, True),
    "request_id": ((str, type(None)), True),
    "requester_id": (str, True),
    "kfrags": (list, True),
    "expires_at_ms": ((int, type(None)), False),
    "emergency": (bool, True),
    "reason": ((str, type(None)), False),
}


def _check_grant(body: dict[str, Any]) -> None:
    require_fields(body, GRANT_SPEC)
    if not GRANT_ID_RE.fullmatch(body["grant_id"]):
        raise ValidationError("grant_id must be 'g-' and 32 hex digits")
    if not 1 <= len(body["kfrags"]) <= 64 or not all(isinstance(k, bytes) and len(k) <= 2048 for k in body["kfrags"]):
        raise ValidationError("kfrags must be one sealed fragment per hospital node")
    if body["emergency"]:
        if not isinstance(body.get("reason"), str) or not body["reason"].strip():
            raise ValidationError("an emergency grant needs a reason")
    elif body["request_id"] is None:
        raise ValidationError("a grant answers a request: request_id is required")


def _apply_grant(ctx: "ExecContext", tx: Transaction) -> Any:
    b = tx.body
    if len(b["kfrags"]) != len(ctx.genesis.nodes):
        raise TxRejected("bad_grant", "a grant needs one sealed fragment per hospital node")
    if ctx.state.exists(grant_key(b["grant_id"])):
        raise TxRejected("duplicate_grant", "grant id already used")
    rec = ctx.state.get(keys.record_key(b["record_id"]))
    if rec is None:
        raise TxRejected("unknown_record", f"no record {b['record_id']}")
    if ctx.state.get(keys.user_key(b["requester_id"])) is None:
        raise TxRejected("unknown_user", f"{b['requester_id']} is not a registered user")
    if b["emergency"]:
        req = call_rekey(ctx, tx, "emergency", {"record_id": b["record_id"], "requester_id": b["requester_id"],
                                                 "reason": b["reason"]})
    else:
        args: dict[str, Any] = {"request_id": b["request_id"]}
        if b.get("expires_at_ms") is not None:
            args["expires_at_ms"] = b["expires_at_ms"]
        req = call_rekey(ctx, tx, "grant", args)
        if req["record_id"] != b["record_id"] or req["requester_id"] != b["requester_id"]:
            raise TxRejected("bad_grant", "the grant does not match its request's record and requester")
    grant = {
        "grant_id": b["grant_id"],
        "request_id": req["request_id"],
        "record_id": b["record_id"],
        "version": rec["version"],
        "requester_id": b["requester_id"],
        "kfrags": b["kfrags"],
        "emergency": b["emergency"],
        "granted_by": tx.sender,
        "expires_at_ms": req.get("expires_at_ms"),
        "height": ctx.height,
    }
    ctx.state.put(grant_key(b["grant_id"]), grant)
    ctx.state.put(grant_by_key(b["requester_id"], b["record_id"]), b["grant_id"])
    return {"grant_id": b["grant_id"], "request_id": req["request_id"], "version": rec["version"],
            "expires_at_ms": req.get("expires_at_ms")}


register_kind(TxKind("grant_access", frozenset({"user"}), _check_grant, _apply_grant,
                     roles=frozenset({"patient", "physician"})))


# -- record_access ---------------------------------------------------------------------------


def _check_access(body: dict[str, Any]) -> None:
    require_fields(body, {"record_id": (str, True)})


def grant_state(ctx_state: Any, requester_id: str, record_id: str) -> tuple[dict[str, Any] | None, str]:
    """(the requester's grant for the record, or None, and why not)."""
    gid = ctx_state.get(grant_by_key(requester_id, record_id))
    if gid is None:
        return None, "no grant for this record"
    grant = ctx_state.get(grant_key(gid))
    rec = ctx_state.get(keys.record_key(record_id))
    if grant is None or rec is None:
        return None, "no grant for this record"
    if grant["version"] != rec["version"]:
        return None, "the record was re-keyed after the grant"
    return grant, ""


def _apply_access(ctx: "ExecContext", tx: Transaction) -> Any:
    """Log a fetch before any node hands out a key fragment: every access is audited, and
    a refused one too (the refusal is the receipt's result, durable on chain)."""
    record_id = tx.body["record_id"]
    grant, why = grant_state(ctx.state, tx.sender, record_id)
    status = "refused"
    if grant is not None:
        req = call_rekey(ctx, tx, "status", {"request_id": grant["request_id"]}, read_only=True)
        if req is not None and req.get("status") == "granted":
            status = "granted"
        else:
            why = f"the request is {req.get('status') if req else 'unknown'}"
    counter = b"an/" + record_id.encode()
    n = ctx.state.get(counter) or 0
    ctx.state.put(counter, n + 1)
    ctx.state.put(access_prefix(record_id) + b"%010d" % n, {
        "who": tx.sender, "at_ms": ctx.block_timestamp_ms, "height": ctx.height, "tx_id": tx.tx_id.hex(),
        "status": status, "why": why, "grant_id": grant["grant_id"] if grant else None,
    })
    ctx.emit("access_" + status, {"record_id": record_id, "requester_id": tx.sender, "why": why})
    return {"status": status, "reason": why, "grant_id": grant["grant_id"] if grant else None}


register_kind(TxKind("record_access", frozenset({"user"}), _check_access, _apply_access))


# -- rotate_record (the paper's data version update) -------------------------------------------



def _check_rotate(body: dict[str, Any]) -> None:
    require_fields(body, VERSION_SPEC)
    check_version_fields(body)


def _apply_rotate(ctx: "ExecContext", tx: Transaction) -> Any:
    b = tx.body
    rec = ctx.state.get(keys.record_key(b["record_id"]))
    if rec is None:
        raise TxRejected("unknown_record", f"no record {b['record_id']}")
    if rec["patient_id"] != tx.sender:
        raise TxRejected("not_owner", "only the record's patient can re-key it")
    if tx.sender not in b["sealed_keys"]:
        raise TxRejected("bad_keys", "the new version's key must be sealed to the patient")
    old_cid = rec["cid"]
    rec.update({k: b[k] for k in ("cid", "size", "capsule", "delegating_key", "verifying_key", "sealed_keys")})
    rec["version"] += 1
    rec["updated_at_ms"] = ctx.block_timestamp_ms
    ctx.state.put(keys.record_key(b["record_id"]), rec)
    ctx.emit("record_rotated", {"record_id": b["record_id"], "version": rec["version"], "old_cid": old_cid,
                                "cid": b["cid"]})
    return {"record_id": b["record_id"], "version": rec["version"], "cid": b["cid"]}


register_kind(TxKind("rotate_record", frozenset({"user"}), _check_rotate, _apply_rotate,
                     roles=frozenset({"patient"})))


# -- set_policy (the patient tightens a record's access policy) ----------------------------


def _check_set_policy(body: dict[str, Any]) -> None:
    from pienode.ledger.kinds import check_policy

    require_fields(body, {"record_id": (str, True), "policy": (dict, True)})
    check_policy(body["policy"])


def _apply_set_policy(ctx: "ExecContext", tx: Transaction) -> Any:
    from pienode.identity.levels import satisfies

    b = tx.body
    rec = ctx.state.get(keys.record_key(b["record_id"]))
    if rec is None:
        raise TxRejected("unknown_record", f"no record {b['record_id']}")
    if rec["patient_id"] != tx.sender:
        raise TxRejected("not_owner", "only the record's patient sets its access policy")
    type_level = ctx.genesis.data_type_levels[rec["data_type"]]
    if not satisfies(b["policy"]["level"], type_level):
        raise TxRejected("weak_policy", f"{rec['data_type']} needs at least level {type_level}")
    rec["policy"] = {"level": b["policy"]["level"], "roles": b["policy"].get("roles"),
                     "purposes": b["policy"].get("purposes"), "expires_at_ms": b["policy"].get("expires_at_ms")}
    rec["security_level"] = b["policy"]["level"]
    rec["updated_at_ms"] = ctx.block_timestamp_ms
    ctx.state.put(keys.record_key(b["record_id"]), rec)
    ctx.emit("policy_set", {"record_id": b["record_id"], "policy": rec["policy"]})
    return {"record_id": b["record_id"], "policy": rec["policy"]}


register_kind(TxKind("set_policy", frozenset({"user"}), _check_set_policy, _apply_set_policy,
                     roles=frozenset({"patient"})))
