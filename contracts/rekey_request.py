"""Re-key request (design paper, Algorithm 2): policy check, pending requests, transitions.

request(ctx, record_id, purpose)            -> {"status": "pending"|"refused", ...}
pending(ctx, patient_id, after=None, limit=50)   (the patient only)
grant(ctx, request_id, expires_at_ms=None)  (the record's patient only)
deny(ctx, request_id, reason=None)          (the record's patient only)
emergency(ctx, record_id, requester_id, reason)  (the record's creating physician only)
expire(ctx, request_id)                     (anyone, once the request or grant is stale)
status(ctx, request_id)                     -> the request, with lazily applied expiry
history(ctx, record_id, after=None, limit=50)    (the record's patient or physician)
requests_by(ctx, requester_id, after=None, limit=50)  (the requester only)

A requester satisfies a record's access policy when its certified security level is at
least the policy's level (private > moderate > low), its role and the purpose are in the
policy's lists (when given) and the policy has not expired. A refusal is durable: it is
stored, audited and emitted as event "refused", and the call returns normally so the
transaction commits. Every transition appends an audit entry (who, when, why).

State layout: req/<request_id>, pending/<patient_id>/<request_id>,
byreq/<requester_id>/<request_id>, hist/<record_id>/<seq 10 digits>, histn/<record_id>.
"""

EXPORTS = ["request", "pending", "grant", "deny", "emergency", "expire", "status",
           "history", "requests_by"]

LEVELS = {"low": 0, "moderate": 1, "private": 2}
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@+=-"
PENDING_TTL_MS = 7 * 24 * 3600 * 1000
EMERGENCY_TTL_MS = 24 * 3600 * 1000
MAX_LIST = 200


def ident(ctx, value, what):
    if not isinstance(value, str) or len(value) == 0 or len(value) > 128:
        ctx.fail(f"{what} must be an id of 1..128 characters")
    for ch in value:
        if ch not in ID_CHARS:
            ctx.fail(f"{what} contains a character not allowed in ids")
    if ".." in value:
        ctx.fail(f"{what} must not contain '..'")
    return value


def words(ctx, value, what, required=True):
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value.strip()) == 0 or len(value) > 500:
        ctx.fail(f"{what} must be a non-empty text of at most 500 characters")
    return value


def now(ctx):
    return ctx.timestamp


def audit(ctx, record_id, event, request_id, why, extra=None):
    n = ctx.get("histn/" + record_id, 0)
    entry = {"event": event, "who": ctx.caller.user_id, "role": ctx.caller.role,
             "at_ms": now(ctx), "height": ctx.height, "request_id": request_id,
             "why": why, "tx_id": ctx.tx_id}
    if extra is not None:
        entry.update(extra)
    ctx.put("hist/" + record_id + "/" + str(n).zfill(10), entry)
    ctx.put("histn/" + record_id, n + 1)


def policy_of(rec):
    pol = rec.get("policy")
    if not isinstance(pol, dict):
        pol = {}
    level = pol.get("level") or rec.get("security_level") or "private"
    return {"level": level, "roles": pol.get("roles"), "purposes": pol.get("purposes"),
            "expires_at_ms": pol.get("expires_at_ms")}


def check_policy(ctx, pol, purpose):
    """The reason the caller is refused, or None when the policy is satisfied."""
    mine = ctx.caller.security_level
    if mine not in LEVELS:
        return f"requester has no certified security level ({mine})"
    need = pol["level"]
    if need not in LEVELS:
        return f"record has an unknown security level ({need})"
    if LEVELS[mine] < LEVELS[need]:
        return f"security level {mine} does not satisfy {need}"
    roles = pol["roles"]
    if roles is not None and ctx.caller.role not in roles:
        return f"role {ctx.caller.role} is not allowed by the record's policy"
    purposes = pol["purposes"]
    if purposes is not None and purpose not in purposes:
        return f"purpose {purpose} is not allowed by the record's policy"
    exp = pol["expires_at_ms"]
    if exp is not None and now(ctx) > exp:
        return "the record's access policy has expired"
    return None


def load_record(ctx, record_id):
    rec = ctx.record(record_id)
    if rec is None:
        ctx.fail(f"no record {record_id}")
    return rec


def need_tx(ctx):
    if ctx.tx_id is None:
        ctx.fail("this operation must be submitted as a transaction")
    return ident(ctx, ctx.tx_id, "transaction id")


def request(ctx, record_id, purpose):
    rid = ident(ctx, record_id, "record_id")
    purpose = words(ctx, purpose, "purpose")
    req_id = need_tx(ctx)
    if ctx.get("req/" + req_id) is not None:
        ctx.fail(f"request {req_id} already exists")
    rec = load_record(ctx, rid)
    patient = ident(ctx, rec.get("patient_id"), "record patient_id")
    requester = ident(ctx, ctx.caller.user_id, "requester id")
    req = {"request_id": req_id, "record_id": rid, "patient_id": patient,
           "requester_id": requester, "requester_role": ctx.caller.role,
           "requester_level": ctx.caller.security_level, "purpose": purpose,
           "created_at_ms": now(ctx), "height": ctx.height, "emergency": False,
           "decided_at_ms": None, "decided_by": None, "expires_at_ms": None, "reason": None}
    reason = check_policy(ctx, policy_of(rec), purpose)
    ctx.put("byreq/" + requester + "/" + req_id, rid)
    if reason is not None:
        req["status"] = "refused"
        req["reason"] = reason
        ctx.put("req/" + req_id, req)
        audit(ctx, rid, "refused", req_id, reason, {"purpose": purpose})
        ctx.emit("refused", {"request_id": req_id, "record_id": rid,
                             "requester_id": requester, "reason": reason})
        return {"status": "refused", "reason": reason, "request_id": req_id}
    req["status"] = "pending"
    ctx.put("req/" + req_id, req)
    ctx.put("pending/" + patient + "/" + req_id, rid)
    audit(ctx, rid, "requested", req_id, purpose)
    ctx.emit("requested", {"request_id": req_id, "record_id": rid, "patient_id": patient,
                           "requester_id": requester, "purpose": purpose})
    return {"status": "pending", "request_id": req_id}


def effective(ctx, req):
    """The request with expiry applied as of this call's time (no write)."""
    st = req["status"]
    if st == "pending" and now(ctx) > req["created_at_ms"] + PENDING_TTL_MS:
        req["status"] = "expired"
    elif st == "granted" and req["expires_at_ms"] is not None \
            and now(ctx) > req["expires_at_ms"]:
        req["status"] = "expired"
    return req


def load_request(ctx, request_id):
    req = ctx.get("req/" + ident(ctx, request_id, "request_id"))
    if req is None:
        ctx.fail(f"no request {request_id}")
    return req


def decide(ctx, request_id, status, expires_at_ms, reason):
    req = effective(ctx, load_request(ctx, request_id))
    if req["status"] != "pending":
        ctx.fail(f"request {request_id} is {req['status']}, not pending")
    rec = load_record(ctx, req["record_id"])
    if ctx.caller.user_id != rec.get("patient_id"):
        ctx.fail("only the record's patient can decide on its requests")
    need_tx(ctx)
    if expires_at_ms is not None:
        if not isinstance(expires_at_ms, int) or isinstance(expires_at_ms, bool) \
                or expires_at_ms <= now(ctx):
            ctx.fail("expires_at_ms must be a time in the future (ms)")
    pol_exp = policy_of(rec)["expires_at_ms"]
    if status == "granted" and pol_exp is not None:
        expires_at_ms = pol_exp if expires_at_ms is None else min(expires_at_ms, pol_exp)
    req["status"] = status
    req["decided_at_ms"] = now(ctx)
    req["decided_by"] = ctx.caller.user_id
    req["expires_at_ms"] = expires_at_ms if status == "granted" else None
    req["reason"] = reason
    ctx.put("req/" + req["request_id"], req)
    ctx.delete("pending/" + req["patient_id"] + "/" + req["request_id"])
    audit(ctx, req["record_id"], status, req["request_id"], reason,
          {"expires_at_ms": req["expires_at_ms"]})
    ctx.emit(status, {"request_id": req["request_id"], "record_id": req["record_id"],
                      "requester_id": req["requester_id"], "patient_id": req["patient_id"],
                      "expires_at_ms": req["expires_at_ms"]})
    return req


def grant(ctx, request_id, expires_at_ms=None):
    return decide(ctx, request_id, "granted", expires_at_ms, None)


def deny(ctx, request_id, reason=None):
    return decide(ctx, request_id, "denied", None, words(ctx, reason, "reason", False))


def emergency(ctx, record_id, requester_id, reason):
    rid = ident(ctx, record_id, "record_id")
    who = ident(ctx, requester_id, "requester_id")
    why = words(ctx, reason, "reason")
    req_id = need_tx(ctx)
    rec = load_record(ctx, rid)
    if ctx.caller.user_id != rec.get("physician_id"):
        ctx.fail("only the record's creating physician can grant emergency access")
    if ctx.get("req/" + req_id) is not None:
        ctx.fail(f"request {req_id} already exists")
    req = {"request_id": req_id, "record_id": rid, "patient_id": rec.get("patient_id"),
           "requester_id": who, "requester_role": None, "requester_level": None,
           "purpose": "emergency", "created_at_ms": now(ctx), "height": ctx.height,
           "emergency": True, "status": "granted", "decided_at_ms": now(ctx),
           "decided_by": ctx.caller.user_id, "expires_at_ms": now(ctx) + EMERGENCY_TTL_MS,
           "reason": why}
    ctx.put("req/" + req_id, req)
    ctx.put("byreq/" + who + "/" + req_id, rid)
    audit(ctx, rid, "emergency", req_id, why, {"requester_id": who,
                                                "expires_at_ms": req["expires_at_ms"]})
    ctx.emit("emergency", {"request_id": req_id, "record_id": rid, "requester_id": who,
                           "patient_id": req["patient_id"], "physician_id": ctx.caller.user_id,
                           "expires_at_ms": req["expires_at_ms"]})
    return req


def expire(ctx, request_id):
    stored = load_request(ctx, request_id)
    was = stored["status"]
    req = effective(ctx, stored)
    if req["status"] != "expired" or was == "expired":
        ctx.fail(f"request {request_id} is {req['status']}; nothing to expire")
    need_tx(ctx)
    req["decided_at_ms"] = now(ctx) if was == "pending" else req["decided_at_ms"]
    ctx.put("req/" + req["request_id"], req)
    if was == "pending":
        ctx.delete("pending/" + req["patient_id"] + "/" + req["request_id"])
    audit(ctx, req["record_id"], "expired", req["request_id"], f"{was} request expired")
    ctx.emit("expired", {"request_id": req["request_id"], "record_id": req["record_id"],
                         "requester_id": req["requester_id"], "was": was})
    return req


def status(ctx, request_id):
    req = ctx.get("req/" + ident(ctx, request_id, "request_id"))
    if req is None:
        return None
    return effective(ctx, req)


def page_args(ctx, after, limit):
    if after is not None:
        ident(ctx, after, "after")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        ctx.fail("limit must be a positive integer")
    return min(limit, MAX_LIST)


def pending(ctx, patient_id, after=None, limit=50):
    pid = ident(ctx, patient_id, "patient_id")
    if ctx.caller.user_id != pid:
        ctx.fail("only the patient can list their pending requests")
    limit = page_args(ctx, after, limit)
    prefix = "pending/" + pid + "/"
    start = None if after is None else prefix + after
    out = []
    for item in ctx.scan(prefix, start_after=start, limit=limit):
        req = ctx.get("req/" + item[0][len(prefix):])
        if req is not None:
            req = effective(ctx, req)
            if req["status"] == "pending":
                out.append(req)
    return out


def history(ctx, record_id, after=None, limit=50):
    rid = ident(ctx, record_id, "record_id")
    rec = load_record(ctx, rid)
    me = ctx.caller.user_id
    if me != rec.get("patient_id") and me != rec.get("physician_id"):
        ctx.fail("only the record's patient or physician can read its audit trail")
    limit = page_args(ctx, after, limit)
    prefix = "hist/" + rid + "/"
    start = None if after is None else prefix + after
    return [dict(item[1], seq=item[0][len(prefix):])
            for item in ctx.scan(prefix, start_after=start, limit=limit)]


def requests_by(ctx, requester_id, after=None, limit=50):
    who = ident(ctx, requester_id, "requester_id")
    if ctx.caller.user_id != who:
        ctx.fail("only the requester can list their requests")
    limit = page_args(ctx, after, limit)
    prefix = "byreq/" + who + "/"
    start = None if after is None else prefix + after
    out = []
    for item in ctx.scan(prefix, start_after=start, limit=limit):
        req = ctx.get("req/" + item[0][len(prefix):])
        if req is not None:
            out.append(effective(ctx, req))
    return out
