"""EMR sharing operations (design paper, Algorithms 1 and 2), one function per ``pie`` command.

Keys: each record version has its own delegating key pair and kfrag-signing key, both
sealed to the patient and to the creating physician (for emergency access) and never
stored in the clear; the DEK travels only inside the capsule. A grant is t-of-n: one
fragment sealed to each hospital node, so no single hospital and no requester alone can
recover a delegating key.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from pienode.client import download
from pienode.client.session import Refused, Session
from pienode.client.transfer import Progress, encrypted_pieces, encrypted_size
from pienode.crypto import grants, pre, pre_rules, seal
from pienode.crypto.pre import PrePublicKey, PreSecretKey
from pienode.encoding import pack, unpack
from pienode.errors import CryptoError, Forbidden, PieError, ValidationError
from pienode.identity.levels import DEFAULT_DATA_TYPE_LEVELS, LEVELS, satisfies


def _signer_context(record_id: str, version: int) -> bytes:
    return grants.record_key_context(record_id, version) + b"/signer"


def new_version_keys(recipients: dict[str, PrePublicKey], record_id: str, version: int
                     ) -> tuple[dict[str, Any], bytes]:
    """Fresh keys for a record version: (the on-chain fields, the DEK)."""
    ids = list(recipients)
    keys, dek = grants.new_record_version([recipients[u] for u in ids], record_id, version)
    signer = PreSecretKey.generate()
    sealed = {}
    for u, sealed_dsk in zip(ids, keys.sealed_delegating_sk):
        sealed_signer = seal.seal(recipients[u], signer.to_bytes(), _signer_context(record_id, version))
        sealed[u] = pack([sealed_dsk, sealed_signer])
    fields = {
        "capsule": keys.key_capsule,
        "delegating_key": keys.delegating_pk.to_bytes(),
        "verifying_key": signer.public_key.to_bytes(),
        "sealed_keys": sealed,
    }
    return fields, dek


def open_version_keys(s: Session, rec: dict[str, Any]) -> tuple[PreSecretKey, PreSecretKey]:
    """(delegating secret, kfrag signer) of the record's current version, from my sealed copy."""
    blob = rec["sealed_keys"].get(s.user_id)
    if blob is None:
        raise Forbidden("this record's keys are not sealed to you (only its patient and creating physician)")
    sealed_dsk, sealed_signer = unpack(blob)
    dpk = PrePublicKey.from_bytes(rec["delegating_key"])
    dsk = grants.open_record_key(s.enc_sk, sealed_dsk, rec["record_id"], rec["version"], dpk)
    signer = PreSecretKey.from_bytes(seal.unseal(s.enc_sk, sealed_signer,
                                                 _signer_context(rec["record_id"], rec["version"])))
    if signer.public_key.to_bytes() != rec["verifying_key"]:
        raise CryptoError("sealed signing key does not match the record version")
    return dsk, signer


async def put_file(s: Session, path: Path, dek: bytes, label: str) -> dict[str, Any]:
    """Encrypt ``path`` with ``dek`` and stream it to the node's file store."""
    progress = Progress(label, encrypted_size(path))
    try:
        out = await s.client.request("POST", "/files", data=encrypted_pieces(path, dek, progress),
                                     headers=s.headers("POST", "/files", None))
    finally:
        progress.close()
    return out


async def upload(s: Session, patient_id: str, path: Path, data_type: str, summary: dict[str, Any],
                 level: str | None = None) -> dict[str, Any]:
    if s.wallet.role != "physician":
        raise Forbidden("records are uploaded by physicians (Algorithm 1); your wallet is a " + s.wallet.role)
    if data_type not in (s.genesis.data_type_levels if s.genesis else DEFAULT_DATA_TYPE_LEVELS):
        raise ValidationError(f"unknown data type {data_type!r}; one of "
                              + ", ".join(sorted(s.genesis.data_type_levels)))
    if not path.is_file():
        raise ValidationError(f"no file at {path}")
    type_level = s.genesis.data_type_levels[data_type]
    level = level or type_level
    if level not in LEVELS or not satisfies(level, type_level):
        raise ValidationError(f"{data_type} needs at least level {type_level}")
    patient = await s.user(patient_id)
    if patient["role"] != "patient":
        raise ValidationError(f"{patient_id} is not a patient")
    record_id = "rec-" + secrets.token_hex(16)
    recipients = {patient_id: PrePublicKey.from_bytes(bytes.fromhex(patient["enc_key"])), s.user_id: s.enc_pk}
    fields, dek = new_version_keys(recipients, record_id, 1)
    stored = await put_file(s, path, dek, "encrypt+upload")
    body = {
        "record_id": record_id, "patient_id": patient_id, "data_type": data_type, "summary": summary,
        "cid": stored["cid"], "size": stored["size"],
        "policy": {"level": level, "roles": None, "purposes": None, "expires_at_ms": None},
        **fields,
    }
    out = await s.submit("upload_record", body)
    return {"record_id": record_id, "cid": stored["cid"], "size": path.stat().st_size,
            "stored_bytes": stored["size"], "security_level": level, "height": out["height"],
            "tx_id": out["tx_id"]}


async def search(s: Session, patient: str | None, hospital: str | None, where: dict[str, str],
                 limit: int = 50) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        page = await s.call("record_search", "search", {"patient": patient, "hospital": hospital,
                                                         "where": where or None, "after": after,
                                                         "limit": min(limit - len(out), 50)})
        out.extend(page["results"])
        after = page.get("next")
        if not after or len(out) >= limit:
            return out


async def request(s: Session, record_id: str, purpose: str) -> dict[str, Any]:
    out = await s.contract_tx("rekey_request", "request", {"record_id": record_id, "purpose": purpose})
    return out["result"]


async def pending(s: Session) -> list[dict[str, Any]]:
    return await s.call("rekey_request", "pending", {"patient_id": s.user_id})


async def _make_grant(s: Session, rec: dict[str, Any], requester_id: str) -> tuple[str, list[bytes]]:
    dsk, signer = open_version_keys(s, rec)
    requester = await s.user(requester_id)
    grant_id = "g-" + secrets.token_hex(16)
    kfrags = grants.make_grant(dsk, PrePublicKey.from_bytes(bytes.fromhex(requester["enc_key"])), signer,
                               s.node_keys(), grant_id)
    return grant_id, list(kfrags)


async def grant(s: Session, request_id: str, expires_at_ms: int | None = None) -> dict[str, Any]:
    req = await s.call("rekey_request", "status", {"request_id": request_id})
    if req is None:
        raise ValidationError(f"no request {request_id}")
    if req["status"] != "pending":
        raise ValidationError(f"request {request_id} is {req['status']}, not pending")
    rec = await s.record(req["record_id"])
    grant_id, kfrags = await _make_grant(s, rec, req["requester_id"])
    out = await s.submit("grant_access", {
        "grant_id": grant_id, "record_id": rec["record_id"], "request_id": request_id,
        "requester_id": req["requester_id"], "kfrags": kfrags, "expires_at_ms": expires_at_ms,
        "emergency": False, "reason": None,
    })
    return {**out["result"], "requester_id": req["requester_id"], "record_id": rec["record_id"]}


async def deny(s: Session, request_id: str, reason: str | None = None) -> dict[str, Any]:
    out = await s.contract_tx("rekey_request", "deny", {"request_id": request_id, "reason": reason})
    return {"request_id": request_id, "status": out["result"]["status"]}


async def emergency(s: Session, record_id: str, requester_id: str, reason: str) -> dict[str, Any]:
    rec = await s.record(record_id)
    if rec["physician_id"] != s.user_id:
        raise Forbidden("only the record's creating physician can break the glass")
    grant_id, kfrags = await _make_grant(s, rec, requester_id)
    out = await s.submit("grant_access", {
        "grant_id": grant_id, "record_id": record_id, "request_id": None, "requester_id": requester_id,
        "kfrags": kfrags, "expires_at_ms": None, "emergency": True, "reason": reason,
    })
    return {**out["result"], "requester_id": requester_id, "record_id": record_id, "reason": reason}


async def _cfrags(s: Session, record_id: str, access_tx: str, need: int) -> list[bytes]:
    """Capsule fragments from the hospitals, asked in parallel; the first ``need`` win."""
    import json

    assert s.genesis is not None
    body = json.dumps({"record_id": record_id, "access_tx": access_tx}).encode()
    from pienode.cli.client import NodeClient

    async def one(node: Any) -> bytes:
        async with NodeClient(node.api_url, timeout_s=20) as c:
            out = await c.request("POST", "/cfrags", data=body, headers={
                **s.headers("POST", "/cfrags", body, audience=node.node_id), "Content-Type": "application/json"})
            return bytes.fromhex(out["cfrag"])

    tasks = [asyncio.create_task(one(n)) for n in s.genesis.nodes]
    got: list[bytes] = []
    errors: list[str] = []
    for fut in asyncio.as_completed(tasks):
        try:
            got.append(await fut)
        except PieError as exc:
            errors.append(exc.message)
        if len(got) >= need:
            break
    for t in tasks:
        t.cancel()
    if len(got) < need:
        raise Forbidden(f"only {len(got)} of the {need} hospitals needed released a key fragment: "
                        + (errors[0] if errors else "no answer"))
    return got


async def fetch(s: Session, record_id: str, out: Path) -> dict[str, Any]:
    """Download and decrypt a record into ``out`` (``download`` says who checks what)."""
    rec, size, dek = await download.fetch_record(s, record_id, out)
    via = "own key"
    if size is None:
        if dek is None:
            dek, via = await _granted_dek(s, rec)
        size = await download.decrypt_from_store(s, rec["cid"], rec["size"], dek, out)
    return {"record_id": rec["record_id"], "out": str(out), "size": size, "version": rec["version"], "via": via}


async def _granted_dek(s: Session, rec: dict[str, Any]) -> tuple[bytes, str]:
    """The DEK through a grant: log the access on chain, then t capsule fragments."""
    assert s.genesis is not None
    logged = await s.submit("record_access", {"record_id": rec["record_id"]})
    if logged["result"]["status"] != "granted":
        raise Refused(f"access refused: {logged['result']['reason']} (the attempt is in the audit trail)")
    need = pre_rules.grant_threshold(len(s.genesis.nodes))
    cfrags = await _cfrags(s, rec["record_id"], logged["tx_id"], need)
    dek = grants.open_grant(s.enc_sk, PrePublicKey.from_bytes(rec["delegating_key"]), rec["capsule"],
                            cfrags, PrePublicKey.from_bytes(rec["verifying_key"]))
    return dek, f"grant ({need} of {len(s.genesis.nodes)} hospitals)"


async def rotate(s: Session, record_id: str, workdir: Path) -> dict[str, Any]:
    """Re-key: new delegating key, DEK, ciphertext and CID; earlier grants stop working."""
    rec = await s.record(record_id)
    if rec["patient_id"] != s.user_id:
        raise Forbidden("only the record's patient can re-key it")
    dsk, _ = open_version_keys(s, rec)
    old_dek = pre.open_original(dsk, rec["capsule"])
    plain = workdir / f".{record_id}.rotate"
    try:
        await download.decrypt_from_store(s, rec["cid"], rec["size"], old_dek, plain)
        physician = await s.user(rec["physician_id"])
        recipients = {s.user_id: s.enc_pk,
                      rec["physician_id"]: PrePublicKey.from_bytes(bytes.fromhex(physician["enc_key"]))}
        version = rec["version"] + 1
        fields, dek = new_version_keys(recipients, record_id, version)
        stored = await put_file(s, plain, dek, "re-encrypt+upload")
    finally:
        plain.unlink(missing_ok=True)
    out = await s.submit("rotate_record", {"record_id": record_id, "cid": stored["cid"], "size": stored["size"],
                                           **fields})
    return {"record_id": record_id, "version": out["result"]["version"], "cid": stored["cid"],
            "old_cid": rec["cid"], "height": out["height"]}


async def audit(s: Session, record_id: str | None) -> list[dict[str, Any]]:
    """Every request, refusal, grant, denial, emergency access and fetch of my records."""
    if record_id:
        records = [record_id]
    else:
        records = [r["record_id"] for r in await search(s, s.user_id, None, {}, limit=10_000)]
    events: list[dict[str, Any]] = []
    for rid in records:
        after = None
        while True:
            page = await s.call("rekey_request", "history", {"record_id": rid, "after": after, "limit": 200})
            for e in page:
                events.append({"record_id": rid, "event": e["event"], "who": e["who"], "at_ms": e["at_ms"],
                               "request_id": e.get("request_id"), "why": e.get("why"),
                               "requester_id": e.get("requester_id"), "height": e.get("height")})
            if len(page) < 200:
                break
            after = page[-1]["seq"]
        for a in (await s.client.get(f"/records/{rid}/accesses"))["accesses"]:
            events.append({"record_id": rid, "event": "fetch" if a["status"] == "granted" else "fetch_refused",
                           "who": a["who"], "at_ms": a["at_ms"], "request_id": None, "why": a["why"] or None,
                           "requester_id": a["who"], "height": a["height"]})
    events.sort(key=lambda e: (e["height"] or 0, e["at_ms"]))
    return events


async def set_policy(s: Session, record_id: str, *, level: str | None, roles: list[str] | None,
                     purposes: list[str] | None, expires_at_ms: int | None) -> dict[str, Any]:
    """The patient tightens (or relaxes, down to the data type's level) a record's policy."""
    rec = await s.record(record_id)
    if rec["patient_id"] != s.user_id:
        raise Forbidden("only the record's patient sets its access policy")
    policy = {"level": level or rec["policy"]["level"], "roles": roles, "purposes": purposes,
              "expires_at_ms": expires_at_ms}
    out = await s.submit("set_policy", {"record_id": record_id, "policy": policy})
    return out["result"]
