"""Record search (design paper, search contract): AND-ed conditions over the ledger indexes.

search(ctx, patient=None, hospital=None, where=None, after=None, limit=20)

Each condition names one index ("patient", "hospital", "type", "summary:<field>"); the
matching record ids are the intersection of the indexes' sorted id lists, found by a
leapfrog join that reads index pages through ctx.index and never scans the whole state.
Results come in record-id order with a cursor: pass the returned "next" as "after" to
continue ("next" is None once nothing is left). A call examines about MAX_EXAMINED index
entries at most, so a sparse intersection may return fewer than "limit" results with a
non-None cursor: the client keeps paging.
Answers carry summaries and record ids only: never the patient id, the cid or the capsule.
"""

EXPORTS = ["search"]

PAGE = 1000
MAX_EXAMINED = 8000
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


def load(ctx, c):
    """Refill c's buffer with the next page of ids when it has run dry."""
    if len(c["buf"]) == 0 and c["more"]:
        page = ctx.index(c["name"], c["value"], c["last"], PAGE)
        c["buf"] = page
        c["more"] = len(page) == PAGE
        if len(page) > 0:
            c["last"] = page[-1]


def search(ctx, patient=None, hospital=None, where=None, after=None, limit=20):
    conds = conditions(ctx, patient, hospital, where)
    if after is not None and (not isinstance(after, str) or len(after) > 200):
        ctx.fail("after must be a record id")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        ctx.fail("limit must be a positive integer")
    limit = min(limit, MAX_LIMIT)
    lists = [{"name": n, "value": v, "buf": [], "more": True, "last": after}
             for n, v in conds]
    found = []
    cursor = after
    examined = 0
    done = False
    while len(found) < limit and examined < MAX_EXAMINED:
        # Page-merge join: the ids up to `hi` are known for every list, so the
        # intersection below `hi` is decided by this round's buffers alone.
        hi = None
        for c in lists:
            load(ctx, c)
            if len(c["buf"]) == 0:
                done = True  # one list is exhausted: nothing more can match
                break
            if c["more"] and (hi is None or c["buf"][-1] < hi):
                hi = c["buf"][-1]
        if done:
            break
        heads = [[c["buf"] if hi is None else [x for x in c["buf"] if x <= hi], c]
                 for c in lists]
        heads = sorted(heads, key=lambda h: len(h[0]))
        driver = heads[0][0]
        others = [{x: True for x in h[0]} for h in heads[1:]]
        for x in driver:
            keep = True
            for o in others:
                if x not in o:
                    keep = False
                    break
            if keep:
                found.append(x)
                if len(found) == limit:
                    break
        for h in heads:
            examined += len(h[0])
        if len(found) == limit:
            cursor = found[-1]
            break
        if hi is None:
            done = True
            break
        cursor = hi
        for c in lists:
            c["buf"] = [x for x in c["buf"] if x > hi]
    results = []
    for rid in found:
        rec = ctx.record(rid)
        if rec is not None:
            results.append({k: rec.get(k) for k in FIELDS})
    if done:
        cursor = None
    return {"results": results, "next": cursor, "examined": examined}
