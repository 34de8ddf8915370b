"""``pie``: the command line of patients, physicians, researchers and insurers."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from pienode.cli.client import NodeClient
from pienode.cli.common import emit, run_command, table
from pienode.errors import PieError
from pienode.cli.wallet import Wallet
from pienode.identity.levels import ROLES
from pienode.ledger.kinds import ID_RE, RECORD_ID_RE
from pienode.ledger.tx import TX_ID_RE

_USER_ID = "a user id, a lowercase prefix, '-' and 8 to 64 lowercase hex digits"
#: The id arguments checked before anything is sent, with the ledger's own patterns:
#: (argparse dest, flag, pattern, what the flag wants).
ID_ARGS: tuple[tuple[str, str, re.Pattern[str], str], ...] = (
    ("record", "--record", RECORD_ID_RE, "a record id, 'rec-' and 32 lowercase hex digits"),
    ("request", "--request", TX_ID_RE, "a request id, 64 lowercase hex digits (as `pie requests` lists it)"),
    ("patient", "--patient", ID_RE, _USER_ID),
    ("requester", "--for", ID_RE, _USER_ID),
)


def default_node() -> str:
    env = os.environ.get("PIE_NODE")
    if env:
        return env
    for candidate in (Path("demo-cluster/cluster.json"), Path("cluster.json")):
        if candidate.exists():
            try:
                return json.loads(candidate.read_text())["nodes"][0]["api"]
            except (ValueError, KeyError, IndexError):
                pass
    return "http://127.0.0.1:8700"


async def _register(args: argparse.Namespace) -> int:
    wallet = Wallet.create(Path(args.wallet))
    async with NodeClient(args.node) as c:
        out = await c.post_json("/users/register", {
            "role": args.role,
            "name": args.name,
            "sign_key": wallet.sign_key.public_key.hex(),
            "enc_key": wallet.enc_key.public_key.hex(),
        })
    wallet.user_id, wallet.role, wallet.name = out["user_id"], args.role, args.name
    wallet.cert, wallet.node = out["cert"], args.node
    wallet.save()
    result = {"user_id": out["user_id"], "role": args.role, "security_level": out["cert"]["security_level"],
              "hospital_id": out["cert"]["hospital_id"], "wallet": str(wallet.path), "height": out["height"]}
    emit(result, args.json, lambda r: f"registered {r['user_id']} ({r['role']}, level {r['security_level']}) "
                                      f"at {r['hospital_id']}; wallet {r['wallet']}")
    return 0


def _session(args: argparse.Namespace) -> Any:
    from pienode.client.session import Session

    wallet = Wallet.load(Path(args.wallet))
    wallet.require_registered()
    return Session(wallet, args.node or os.environ.get("PIE_NODE") or wallet.node or default_node())


def _where(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise PieError(f"--where wants KEY=VALUE, not {item!r}")
        out[k] = v
    return out


def _ts(ms: int | None) -> str:
    import time

    return "-" if not ms else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


async def _upload(args: argparse.Namespace) -> int:
    from pienode.client import emr

    try:
        summary = json.loads(args.summary) if args.summary else {}
    except ValueError as exc:
        raise PieError(f"--summary is not JSON: {exc}") from None
    if not isinstance(summary, dict):
        raise PieError("--summary must be a JSON object")
    async with _session(args) as s:
        out = await emr.upload(s, args.patient, Path(args.file), args.type, summary, args.level)
    emit(out, args.json, lambda r: f"uploaded {r['record_id']} ({r['size']} bytes, level {r['security_level']})\n"
                                   f"cid {r['cid']}")
    return 0


async def _search(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        rows = await emr.search(s, args.patient, args.hospital, _where(args.where), args.limit)
    emit({"records": rows}, args.json, lambda r: table(
        [(x["record_id"], x["data_type"], x["security_level"], x["hospital_id"], _ts(x.get("created_at_ms")),
          json.dumps(x.get("summary", {}), sort_keys=True)) for x in r["records"]],
        ["record", "type", "level", "hospital", "created", "summary"]) if r["records"] else "no records found")
    return 0


async def _request(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        out = await emr.request(s, args.record, args.purpose)
    if out["status"] == "refused":
        if args.json:
            emit(out, True)
        raise PieError(f"request refused: {out['reason']} (recorded in the record's audit trail)")
    emit(out, args.json, lambda r: f"request {r['request_id']} is pending the patient's decision")
    return 0


async def _requests(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        rows = await emr.pending(s)
        events = [e for e in await emr.audit(s, None) if e["event"] == "emergency"]
    out = {"pending": rows, "emergency": events}

    def human(r: dict[str, Any]) -> str:
        lines = []
        for e in r["emergency"]:
            lines.append(f"!! EMERGENCY ACCESS to {e['record_id']} by {e['who']} for {e['requester_id']} "
                         f"at {_ts(e['at_ms'])}: {e['why']}")
        if r["pending"]:
            lines.append(table([(x["request_id"], x["record_id"], x["requester_id"], x["requester_role"],
                                 x["requester_level"], x["purpose"], _ts(x["created_at_ms"])) for x in r["pending"]],
                               ["request", "record", "requester", "role", "level", "purpose", "asked"]))
        else:
            lines.append("no pending requests")
        return "\n".join(lines)

    emit(out, args.json, human)
    return 0


async def _grant(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        out = await emr.grant(s, args.request, args.expires_at_ms)
    emit(out, args.json, lambda r: f"granted {r['requester_id']} access to {r['record_id']} (grant {r['grant_id']})")
    return 0


async def _deny(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        out = await emr.deny(s, args.request, args.reason)
    emit(out, args.json, lambda r: f"request {r['request_id']} {r['status']}")
    return 0


async def _fetch(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        out = await emr.fetch(s, args.record, Path(args.out))
    emit(out, args.json, lambda r: f"wrote {r['size']} bytes of {r['record_id']} (version {r['version']}) "
                                   f"to {r['out']} via {r['via']}")
    return 0


async def _emergency(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        out = await emr.emergency(s, args.record, args.requester, args.reason)
    emit(out, args.json, lambda r: f"emergency access to {r['record_id']} granted to {r['requester_id']} "
                                   f"until {_ts(r.get('expires_at_ms'))}; the patient will see it")
    return 0


async def _rotate(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        out = await emr.rotate(s, args.record, Path(args.wallet))
    emit(out, args.json, lambda r: f"{r['record_id']} re-keyed to version {r['version']} (cid {r['cid']}); "
                                   f"earlier grants no longer open it")
    return 0


async def _audit(args: argparse.Namespace) -> int:
    from pienode.client import emr

    async with _session(args) as s:
        events = await emr.audit(s, args.record)
        if args.fhir:
            from pienode.client.fhir import audit_bundle

            emit(audit_bundle(events, s.user_id), True)
            return 0
    emit({"events": events}, args.json, lambda r: table(
        [(_ts(e["at_ms"]), e["record_id"], ("!! " if e["event"] == "emergency" else "") + e["event"], e["who"],
          e.get("requester_id") or "", e.get("why") or "") for e in r["events"]],
        ["when", "record", "event", "who", "for", "why"]) if r["events"] else "no events")
    return 0


async def _policy(args: argparse.Namespace) -> int:
    from pienode.client import emr

    split = (lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None)
    async with _session(args) as s:
        out = await emr.set_policy(s, args.record, level=args.level, roles=split(args.roles),
                                   purposes=split(args.purposes), expires_at_ms=args.expires_at_ms)
    emit(out, args.json, lambda r: f"{r['record_id']}: policy {json.dumps(r['policy'], sort_keys=True)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pie", description="PIE: share medical records with the patient in control.")
    p.add_argument("--node", default=None, help="hospital node API URL (default: $PIE_NODE or the local cluster)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("register", help="create a wallet and register it at a hospital")
    r.add_argument("--wallet", required=True)
    r.add_argument("--role", required=True, choices=ROLES)
    r.add_argument("--name", required=True, help="your real name: kept only by the registering hospital")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_register)

    def cmd(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument("--wallet", required=True)
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=fn)
        return c

    u = cmd("upload", _upload, "encrypt a record for a patient and upload it (physicians)")
    u.add_argument("--patient", required=True)
    u.add_argument("--file", required=True)
    u.add_argument("--type", required=True, help="data type (design paper, Table 5), e.g. medical_imaging, omics")
    u.add_argument("--summary", default=None, help="non-identifying summary as a JSON object")
    u.add_argument("--level", default=None, choices=["low", "moderate", "private"],
                   help="tighten the access policy above the data type's level")
    se = cmd("search", _search, "find records by patient, hospital or summary fields")
    se.add_argument("--patient", default=None)
    se.add_argument("--hospital", default=None)
    se.add_argument("--where", action="append", metavar="KEY=VALUE")
    se.add_argument("--limit", type=int, default=50)
    rq = cmd("request", _request, "ask a record's patient for access")
    rq.add_argument("--record", required=True)
    rq.add_argument("--purpose", required=True)
    cmd("requests", _requests, "pending requests for my records (patients)")
    g = cmd("grant", _grant, "grant a pending request (patients)")
    g.add_argument("--request", required=True)
    g.add_argument("--expires-at-ms", type=int, default=None)
    d = cmd("deny", _deny, "deny a pending request (patients)")
    d.add_argument("--request", required=True)
    d.add_argument("--reason", default=None)
    f = cmd("fetch", _fetch, "download and decrypt a record you may open")
    f.add_argument("--record", required=True)
    f.add_argument("--out", required=True)
    e = cmd("emergency", _emergency, "break the glass: grant a requester access on the patient's behalf "
                                     "(the record's creating physician)")
    e.add_argument("--record", required=True)
    e.add_argument("--for", dest="requester", required=True)
    e.add_argument("--reason", required=True)
    ro = cmd("rotate", _rotate, "re-key a record: new version, earlier grants stop working (patients)")
    ro.add_argument("--record", required=True)
    po = cmd("policy", _policy, "set a record's access policy: level, roles, purposes, expiry (patients)")
    po.add_argument("--record", required=True)
    po.add_argument("--level", default=None, choices=["low", "moderate", "private"])
    po.add_argument("--roles", default=None, help="comma-separated roles allowed to ask (default: any)")
    po.add_argument("--purposes", default=None, help="comma-separated purposes allowed (default: any)")
    po.add_argument("--expires-at-ms", type=int, default=None, help="after this time nobody new gets access")
    a = cmd("audit", _audit, "who asked, who got access, when (patients)")
    a.add_argument("--record", default=None)
    a.add_argument("--fhir", action="store_true", help="export FHIR R4 AuditEvent resources (a Bundle)")
    return p


def check_ids(args: argparse.Namespace) -> None:
    """Refuse a malformed id (record, request, user) before any request is sent or any file
    is written: the node could only answer "not found" or "unknown user", which hides the typo.

    Raises:
        PieError: naming the first malformed flag, what it wants and what it got.
    """
    for dest, flag, pattern, wants in ID_ARGS:
        value = getattr(args, dest, None)
        if value is not None and not pattern.fullmatch(value):
            raise PieError(f"{flag} wants {wants}, not {value!r}")


def _run(args: argparse.Namespace) -> Any:
    check_ids(args)
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.node is None and args.command == "register":
        args.node = default_node()
    return run_command(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
