"""Record search (design paper, search contract): AND-ed conditions over the ledger indexes.

search(ctx, patient=None, hospital=None, where=None, after=None, limit=20)

Each condition names one index ("patient", "hospital", "type", "summary:<field>"); the
matching record ids are the intersection of the indexes' sorted id lists, found by a
leapfrog join that reads index pages through ctx.index and never scans the whole state.
Results come in record-id order with a cursor: pass the returned "next" as "after" to
continue ("next" is None once nothing is left). A call examines at most MAX_EXAMINED ids,
so a sparse intersection may return fewer than "limit" results with a non-None cursor.
Answers carry summaries and record ids only: never the patient id, the cid or the capsule.
"""

PAGE = 256
MAX_EXAMINED = 20000
MAX_LIMIT = 100
FIELDS = ["record_id", "data_type", "security_level", "summary", "hospital_id",
          "created_at_ms", "version"]
NAMED = {"patient": "patient", "patient_id": "patient", "hospital": "hospital",
         "hospital_id": "hospital", "type": "type", "data_type": "type"}


def conditions(ctx, patient, hospital, where):
    conds = []
    if patient is not None:
        conds.append(["patient", text(ctx, patient, "patient")])
    if hospital is not None:
        conds.append(["hospital", text(ctx, hospital, "hospital")])
    if where is not None:
        if not isinstance(where, dict):
            ctx.fail("where must be a map of field to value")
        for field in sorted(where.keys()):
            value = text(ctx, where[field], field)
            if field in NAMED:
                conds.append([NAMED[field], value])
            else:
                if not isinstance(field, str) or len(field) == 0 or len(field) > 64:
                    ctx.fail("summary field names are 1..64 characters")
                conds.append(["summary:" + field, value])
    if len(conds) == 0:
        ctx.fail("search needs at least one condition (patient, hospital or where)")
    if len(conds) > 8:
        ctx.fail("at most 8 conditions")
    return conds


def text(ctx, value, what):
    if isinstance(value, bool) or not isinstance(value, [str, int]):
        ctx.fail(f"{what} must be a string or an integer")
    value = str(value)
    if len(value) == 0 or len(value) > 200:
        ctx.fail(f"{what} must be 1..200 characters")
    return value


def fill(ctx, c):
    """Make sure c has an unread id buffered; False when its list is exhausted."""
    if c["pos"] < len(c["buf"]):
        return True
    if c["done"]:
        return False
    page = ctx.index(c["name"], c["value"], c["last"], PAGE)
    c["buf"] = page
    c["pos"] = 0
    if len(page) < PAGE:
        c["done"] = True
    if len(page) == 0:
        return False
    c["last"] = page[-1]
    return True


def search(ctx, patient=None, hospital=None, where=None, after=None, limit=20):
    conds = conditions(ctx, patient, hospital, where)
    if after is not None and (not isinstance(after, str) or len(after) > 200):
        ctx.fail("after must be a record id")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        ctx.fail("limit must be a positive integer")
    limit = min(limit, MAX_LIMIT)
    lists = [{"name": n, "value": v, "buf": [], "pos": 0, "done": False, "last": after}
             for n, v in conds]
    found = []
    cursor = after
    examined = 0
    exhausted = False
    while len(found) < limit and examined < MAX_EXAMINED:
        target = None
        for c in lists:
            if not fill(ctx, c):
                exhausted = True
                break
            head = c["buf"][c["pos"]]
            if target is None or head > target:
                target = head
        if exhausted:
            break
        agree = True
        for c in lists:
            while True:
                if not fill(ctx, c):
                    exhausted = True
                    break
                head = c["buf"][c["pos"]]
                if head >= target:
                    break
                if cursor is None or head > cursor:
                    cursor = head  # every id up to here is decided: not in all lists
                c["pos"] += 1
                examined += 1
            if exhausted:
                break
            if head != target:
                agree = False
        if exhausted:
            break
        examined += 1
        if agree:
            found.append(target)
            cursor = target
            for c in lists:
                c["pos"] += 1
    results = []
    for rid in found:
        rec = ctx.record(rid)
        if rec is not None:
            results.append({k: rec.get(k) for k in FIELDS})
    if exhausted:
        cursor = None
    return {"results": results, "next": cursor, "examined": examined}
