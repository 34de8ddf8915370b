"""EMR sharing end to end on a real one-node consortium (f = 0), through the client library.

The same story runs on four real processes in tests/cluster/test_demo.py; here it is fast
enough to check every branch and every threat of the design paper's Table 3 in detail.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from pienode.cli.wallet import Wallet
from pienode.client import emr
from pienode.client.session import Refused, Session
from pienode.errors import Forbidden, ValidationError
from tests.integration.conftest import RunningNode, make_cluster_dir


async def register(http: aiohttp.ClientSession, url: str, path: Path, role: str, name: str) -> Wallet:
    w = Wallet.create(path)
    async with http.post(url + "/users/register", json={
        "role": role, "name": name, "sign_key": w.sign_key.public_key.hex(), "enc_key": w.enc_key.public_key.hex(),
    }) as r:
        out = await r.json()
        assert r.status == 201, out
    w.user_id, w.role, w.name, w.cert, w.node = out["user_id"], role, name, out["cert"], url
    w.save()
    return w


@pytest.fixture
async def world(tmp_path):
    home = make_cluster_dir(tmp_path / "cluster", 1)[0]
    rn = await RunningNode(home).start()
    async with aiohttp.ClientSession() as http:
        people = {}
        for key, role, name in [("pat", "patient", "Patricia Uniquename"), ("phy", "physician", "Dr Creator"),
                                ("res", "researcher", "Rita Search"), ("doc", "physician", "Dr Other"),
                                ("ins", "insurer", "Ivan Insure"), ("er", "physician", "Dr Emergency")]:
            people[key] = await register(http, rn.url, tmp_path / "wallets" / key, role, name)
        rn.people = people
        rn.tmp = tmp_path
        yield rn
    await rn.stop()


def sess(rn: RunningNode, who: str) -> Session:
    return Session(rn.people[who], rn.url)


async def upload(rn, path: Path, data_type: str, summary: dict) -> dict:
    async with sess(rn, "phy") as s:
        return await emr.upload(s, rn.people["pat"].user_id, path, data_type, summary)


async def test_the_whole_story(world):
    rn = world
    ct = rn.tmp / "ct.bin"
    ct.write_bytes(os.urandom(700_000))
    omics = rn.tmp / "omics.bin"
    omics.write_bytes(os.urandom(2 * 1024 * 1024 + 17))
    ct_rec = await upload(rn, ct, "medical_imaging", {"modality": "CT"})
    om_rec = await upload(rn, omics, "omics", {"assay": "wgs"})
    assert ct_rec["security_level"] == "private" and om_rec["security_level"] == "low"

    async with sess(rn, "res") as s:
        found = await emr.search(s, rn.people["pat"].user_id, None, {})
        assert {r["record_id"] for r in found} == {ct_rec["record_id"], om_rec["record_id"]}
        assert all("patient_id" not in r or r.get("summary") for r in found)
        refused = await emr.request(s, ct_rec["record_id"], "research")
        assert refused["status"] == "refused" and "low" in refused["reason"]
        denied_req = (await emr.request(s, om_rec["record_id"], "research"))["request_id"]

    async with sess(rn, "doc") as s:
        req = (await emr.request(s, ct_rec["record_id"], "treatment"))["request_id"]
        with pytest.raises(Refused):  # not granted yet
            await emr.fetch(s, ct_rec["record_id"], rn.tmp / "early.bin")
    assert not (rn.tmp / "early.bin").exists()

    async with sess(rn, "pat") as s:
        assert {p["request_id"] for p in await emr.pending(s)} == {req, denied_req}
        await emr.grant(s, req)
        await emr.deny(s, denied_req, "no")
    async with sess(rn, "doc") as s:
        got = await emr.fetch(s, ct_rec["record_id"], rn.tmp / "doc.bin")
    assert (rn.tmp / "doc.bin").read_bytes() == ct.read_bytes() and got["size"] == ct.stat().st_size

    for who, rec in (("ins", ct_rec), ("res", om_rec)):
        async with sess(rn, who) as s:
            with pytest.raises(Refused):
                await emr.fetch(s, rec["record_id"], rn.tmp / f"{who}.bin")
        assert not (rn.tmp / f"{who}.bin").exists()

    async with sess(rn, "doc") as s:  # only the creating physician may break the glass
        with pytest.raises(Forbidden):
            await emr.emergency(s, ct_rec["record_id"], rn.people["er"].user_id, "ER")
    async with sess(rn, "phy") as s:
        await emr.emergency(s, ct_rec["record_id"], rn.people["er"].user_id, "unconscious in the ER")
    async with sess(rn, "er") as s:
        await emr.fetch(s, ct_rec["record_id"], rn.tmp / "er.bin")
    assert (rn.tmp / "er.bin").read_bytes() == ct.read_bytes()

    async with sess(rn, "pat") as s:
        rot = await emr.rotate(s, ct_rec["record_id"], rn.tmp)
        assert rot["version"] == 2 and rot["cid"] != ct_rec["cid"]
    async with sess(rn, "doc") as s:
        with pytest.raises(Refused, match="re-keyed"):
            await emr.fetch(s, ct_rec["record_id"], rn.tmp / "stale.bin")
    async with sess(rn, "pat") as s:
        await emr.fetch(s, ct_rec["record_id"], rn.tmp / "own.bin")
        events = await emr.audit(s, None)
        from pienode.client.fhir import audit_bundle

        bundle = audit_bundle(events, s.user_id)
    assert (rn.tmp / "own.bin").read_bytes() == ct.read_bytes()
    kinds = [e["event"] for e in events]
    for k in ("refused", "requested", "granted", "denied", "emergency", "fetch", "fetch_refused"):
        assert k in kinds, kinds
    emergency = next(e for e in events if e["event"] == "emergency")
    assert emergency["why"] == "unconscious in the ER" and emergency["requester_id"] == rn.people["er"].user_id
    named = {e["who"] for e in events}
    for who in ("res", "doc", "ins", "er"):
        assert rn.people[who].user_id in named

    from fhir.resources.R4B.auditevent import AuditEvent
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        AuditEvent.model_validate(entry["resource"])

    # Eavesdropping: no plaintext and no name in the node's home, except the name in the
    # registering hospital's private registry.
    probes = [ct.read_bytes()[i:i + 24] for i in range(0, 700_000 - 24, 50_000)]
    probes += [omics.read_bytes()[i:i + 24] for i in range(0, 2 * 1024 * 1024, 300_000)]
    await rn.stop()
    for path in rn.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(p in data for p in probes), f"plaintext in {path}"
    from pienode.storage.leveldb import LevelDBStore

    db = LevelDBStore(rn.home / "data" / "ledger")
    try:
        for k, v in db.iterate():
            if b"Patricia Uniquename" in v:
                assert k.startswith(b"P"), k
    finally:
        db.close()
    rn.node = None
    rn.runner = None


async def test_forged_chunk_is_detected_and_nothing_is_written(world):
    rn = world
    data = rn.tmp / "note.bin"
    data.write_bytes(os.urandom(600_000))
    rec = await upload(rn, data, "clinical_observation", {"kind": "note"})
    packs = list((rn.home / "data" / "files" / "packs").glob("*.pack"))
    assert packs
    for p in packs:  # damage every stored copy: a one-node consortium has no peer to repair from
        raw = bytearray(p.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        p.write_bytes(bytes(raw))
    out = rn.tmp / "out.bin"
    async with sess(rn, "pat") as s:
        with pytest.raises(Exception):
            await emr.fetch(s, rec["record_id"], out)
    assert not out.exists()
    assert not list(out.parent.glob(".out.bin.*"))


async def test_bad_inputs_are_clear_errors(world):
    rn = world
    f = rn.tmp / "x.bin"
    f.write_bytes(b"x")
    async with sess(rn, "phy") as s:
        with pytest.raises(ValidationError, match="unknown data type"):
            await emr.upload(s, rn.people["pat"].user_id, f, "gossip", {})
        with pytest.raises(ValidationError, match="not a patient"):
            await emr.upload(s, rn.people["doc"].user_id, f, "omics", {})
        with pytest.raises(ValidationError, match="needs at least"):
            await emr.upload(s, rn.people["pat"].user_id, f, "medical_imaging", {}, level="low")
    async with sess(rn, "res") as s:
        with pytest.raises(Forbidden, match="physicians"):  # refused before any byte is stored
            await emr.upload(s, rn.people["pat"].user_id, f, "omics", {})


async def test_patient_tightens_the_policy(world):
    rn = world
    f = rn.tmp / "sensor.bin"
    f.write_bytes(os.urandom(1000))
    rec = await upload(rn, f, "sensor_data", {"kind": "heart_rate"})
    assert rec["security_level"] == "moderate"
    async with sess(rn, "ins") as s:  # an insurer (moderate) may ask under the default policy
        assert (await emr.request(s, rec["record_id"], "claims"))["status"] == "pending"
    async with sess(rn, "pat") as s:
        with pytest.raises(Refused, match="needs at least"):
            await emr.set_policy(s, rec["record_id"], level="low", roles=None, purposes=None, expires_at_ms=None)
        out = await emr.set_policy(s, rec["record_id"], level="moderate", roles=["physician"],
                                   purposes=["treatment"], expires_at_ms=None)
        assert out["policy"]["roles"] == ["physician"]
    async with sess(rn, "phy") as s:  # only the patient sets the policy
        with pytest.raises(Exception):
            await emr.set_policy(s, rec["record_id"], level="private", roles=None, purposes=None,
                                 expires_at_ms=None)
    async with sess(rn, "ins") as s:
        refused = await emr.request(s, rec["record_id"], "claims")
        assert refused["status"] == "refused" and "role" in refused["reason"]
    async with sess(rn, "doc") as s:
        assert (await emr.request(s, rec["record_id"], "research"))["status"] == "refused"
        assert (await emr.request(s, rec["record_id"], "treatment"))["status"] == "pending"
