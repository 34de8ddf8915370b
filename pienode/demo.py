"""``pienode demo``: a 4-hospital cluster and the whole EMR-sharing story, narrated.

Six people at four hospitals: a patient, the physician who images her, a researcher, a
second physician, an insurer and an emergency-room physician. A real CT image (pydicom's
test file, never downloaded) and an omics file go through upload, search, refused and
granted requests, fetch, an insurer's failed attempt, a denial, emergency access,
rotation and the patient's audit. Every step checks what it claims and the demo exits
non-zero if anything does not hold.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pienode.cli import cluster
from pienode.cli.client import NodeClient
from pienode.cli.wallet import Wallet
from pienode.client import emr
from pienode.client.session import Refused, Session
from pienode.errors import Forbidden, PieError


class DemoFailed(PieError):
    pass


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def step(n: int, text: str) -> None:
    say(f"\n[{n:>2}] {text}")


def check(cond: bool, what: str) -> None:
    if not cond:
        raise DemoFailed(f"demo check failed: {what}")
    say(f"     ok: {what}")


def ct_image() -> Path:
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        raise DemoFailed("the demo needs pydicom (pip install pydicom)") from None
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        raise DemoFailed("pydicom's CT test file is missing")
    return Path(path)


def dicom_summary(path: Path) -> dict[str, Any]:
    """Non-identifying fields of a DICOM header (the name and ids stay inside the file)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out: dict[str, Any] = {"modality": str(ds.get("Modality", "OT"))}
    if ds.get("PatientSex"):
        out["sex"] = str(ds.PatientSex)
    if ds.get("BodyPartExamined"):
        out["body_part"] = str(ds.BodyPartExamined).lower()
    if "Rows" in ds:
        out["rows"] = int(ds.Rows)
    return out


async def register(url: str, wallet_dir: Path, role: str, name: str) -> Wallet:
    wallet = Wallet.create(wallet_dir)
    async with NodeClient(url) as c:
        out = await c.post_json("/users/register", {
            "role": role, "name": name, "sign_key": wallet.sign_key.public_key.hex(),
            "enc_key": wallet.enc_key.public_key.hex()})
    wallet.user_id, wallet.role, wallet.name, wallet.cert, wallet.node = out["user_id"], role, name, out["cert"], url
    wallet.save()
    return wallet


async def story(directory: Path, nodes: list[dict[str, Any]]) -> None:
    urls = [n["api"] for n in nodes]
    wallets = directory / "wallets"
    step(1, "Six people register at four hospitals; each hospital keeps the real name, the chain sees a pseudonym")
    cast = [("alice", "patient", "Alice Kim", 0), ("bob", "physician", "Dr. Bob Lee", 1),
            ("carol", "researcher", "Carol Park", 2), ("dan", "physician", "Dr. Dan Choi", 3),
            ("eve", "insurer", "Eve Han", 2), ("erin", "physician", "Dr. Erin Yoon", 3)]
    people: dict[str, Wallet] = {}
    for key, role, name, h in cast:
        people[key] = await register(urls[h], wallets / key, role, name)
        say(f"     {name:<14} {role:<10} at {nodes[h]['id']}: {people[key].user_id}")
    alice = people["alice"].user_id

    def session(who: str) -> Session:
        return Session(people[who], people[who].node)

    ct = ct_image()
    omics = directory / "omics.bin"
    with open(omics, "wb") as f:
        for _ in range(8):
            f.write(os.urandom(8 * 1024 * 1024))
    step(2, f"Dr. Bob images Alice: he encrypts a real CT ({ct.stat().st_size} bytes, DICOM) and a 64 MiB omics file "
            "on his machine, stores the ciphertext at his hospital and commits the records")
    async with session("bob") as s:
        t = time.perf_counter()
        ct_rec = await emr.upload(s, alice, ct, "medical_imaging", dicom_summary(ct))
        say(f"     CT     -> {ct_rec['record_id']}  level {ct_rec['security_level']}  "
            f"({(time.perf_counter() - t) * 1000:.0f} ms)  cid {ct_rec['cid']}")
        t = time.perf_counter()
        om_rec = await emr.upload(s, alice, omics, "omics", {"assay": "wgs", "age_band": "40-49"})
        say(f"     omics  -> {om_rec['record_id']}  level {om_rec['security_level']}  "
            f"({(time.perf_counter() - t) * 1000:.0f} ms)")

    step(3, "Carol (researcher, certified 'low') searches by patient id and finds both summaries")
    async with session("carol") as s:
        found = await emr.search(s, alice, None, {})
        for r in found:
            say(f"     {r['record_id']}  {r['data_type']:<16} {r['security_level']:<8} {r['summary']}")
        check({r["record_id"] for r in found} == {ct_rec["record_id"], om_rec["record_id"]}, "both records found")
        step(4, "Carol asks for the CT: the re-key request contract refuses her (low < private) and records it")
        out = await emr.request(s, ct_rec["record_id"], "research")
        check(out["status"] == "refused", f"request refused: {out.get('reason')}")
        carol_req = (await emr.request(s, om_rec["record_id"], "research"))["request_id"]
        say(f"     Carol also asks for the omics file (level low): request {carol_req[:16]}... is pending")

    step(5, "Dr. Dan (another hospital) asks for the CT to treat Alice; Alice sees it and grants it")
    async with session("dan") as s:
        dan_req = (await emr.request(s, ct_rec["record_id"], "treatment"))["request_id"]
    async with session("alice") as s:
        pending = await emr.pending(s)
        for p in pending:
            say(f"     pending: {p['requester_id']} ({p['requester_role']}, {p['requester_level']}) "
                f"wants {p['record_id']} for {p['purpose']}")
        check({p["request_id"] for p in pending} == {dan_req, carol_req}, "Alice sees both pending requests")
        t = time.perf_counter()
        await emr.grant(s, dan_req)
        say(f"     granted: key fragments sealed to each hospital (t = f+1 of 4)  "
            f"({(time.perf_counter() - t) * 1000:.0f} ms)")
        step(6, "Alice denies Carol's request for the omics file")
        await emr.deny(s, carol_req, "not for research")

    step(7, "Dr. Dan fetches: two hospitals release capsule fragments, he opens the key and decrypts the stream")
    out_dir = directory / "fetched"
    async with session("dan") as s:
        t = time.perf_counter()
        got = await emr.fetch(s, ct_rec["record_id"], out_dir / "dan-ct.dcm")
        say(f"     {got['size']} bytes via {got['via']} ({(time.perf_counter() - t) * 1000:.0f} ms)")
    check((out_dir / "dan-ct.dcm").read_bytes() == ct.read_bytes(), "Dan's copy is byte-identical to the CT")

    step(8, "Eve (insurer, no grant) and Carol (denied) try to fetch: refused, nothing written, both audited")
    for who, rec in (("eve", ct_rec), ("carol", om_rec)):
        async with session(who) as s:
            target = out_dir / f"{who}.bin"
            try:
                await emr.fetch(s, rec["record_id"], target)
                raise DemoFailed(f"{who} fetched without a grant")
            except (Refused, Forbidden) as exc:
                say(f"     {who}: {exc.message}")
            check(not target.exists(), f"no file left for {who}")

    down = nodes[2]
    step(9, f"{down['id']} crashes (kill -9): with f = 1 hospital down, sharing goes on. Emergency: Dr. Erin "
            "in the ER needs the CT while Alice is unconscious; Dr. Bob, who created it, breaks the glass")
    os.kill(down["pid"], signal.SIGKILL)
    async with session("bob") as s:
        await emr.emergency(s, ct_rec["record_id"], people["erin"].user_id, "patient unconscious in the ER")
    async with session("erin") as s:
        got = await emr.fetch(s, ct_rec["record_id"], out_dir / "erin-ct.dcm")
    check((out_dir / "erin-ct.dcm").read_bytes() == ct.read_bytes(), "Erin's copy is byte-identical")

    step(10, f"{down['id']} restarts and catches up; Alice re-keys the CT (new key, new ciphertext, new CID): Dan's earlier grant no longer opens it")
    down["pid"] = cluster.start_process(Path(down["home"]))
    cluster.write_cluster(directory, nodes)
    async with NodeClient(down["api"]) as c:
        async with NodeClient(nodes[0]["api"]) as c0:
            target = (await c0.get("/status"))["height"]
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await c.get("/status"))["height"] >= target:
                    break
            except PieError:
                pass
            if time.monotonic() > deadline:
                raise DemoFailed(f"{down['id']} did not catch up within 60 s")
            await asyncio.sleep(0.1)
    say(f"     {down['id']} is back at height >= {target}")
    async with session("alice") as s:
        rot = await emr.rotate(s, ct_rec["record_id"], directory)
        say(f"     version {rot['version']}, cid {rot['cid']}")
    async with session("dan") as s:
        try:
            await emr.fetch(s, ct_rec["record_id"], out_dir / "dan-again.dcm")
            raise DemoFailed("an old grant opened the rotated record")
        except (Refused, Forbidden) as exc:
            say(f"     Dan: {exc.message}")

    step(11, "Alice's audit: every request, refusal, grant, denial, emergency access and fetch")
    async with session("alice") as s:
        events = await emr.audit(s, None)
    for e in events:
        mark = "!!" if e["event"] == "emergency" else "  "
        say(f"   {mark} {time.strftime('%H:%M:%S', time.localtime(e['at_ms'] / 1000))} {e['event']:<14} "
            f"{e['who']:<22} {e.get('requester_id') or '':<22} {e.get('why') or ''}")
    kinds = {e["event"] for e in events}
    check({"refused", "requested", "granted", "denied", "emergency", "fetch", "fetch_refused"} <= kinds,
          "the audit holds every kind of event")
    whos = {e["who"] for e in events}
    check({people[k].user_id for k in ("carol", "dan", "eve", "erin")} <= whos | {e.get("requester_id") for e in events},
          "every requester is named")

    step(12, "No plaintext byte of either file and no patient name on any hospital's chain")
    ct_bytes = ct.read_bytes()
    probes = [ct_bytes[i:i + 32] for i in range(2048, len(ct_bytes) - 32, 4096)]
    om = omics.read_bytes()
    probes += [om[i:i + 32] for i in range(0, len(om) - 32, 1 << 20)]
    for n in nodes:
        home = Path(n["home"])
        for path in home.rglob("*"):
            if path.is_file() and path.stat().st_size < 512 * 1024 * 1024:
                data = path.read_bytes()
                if any(p in data for p in probes):
                    raise DemoFailed(f"plaintext found in {path}")
    check(True, "no plaintext in any home (ledger, file store, logs)")
    name = b"Alice Kim"
    holders = [n["id"] for n in nodes if any(name in p.read_bytes() for p in Path(n["home"]).rglob("*")
                                               if p.is_file() and p.stat().st_size < 512 * 1024 * 1024)]
    check(set(holders) <= {nodes[0]["id"]}, f"Alice's name is held only by the hospital that registered her "
                                            f"({', '.join(holders) or 'none in plain bytes'})")


async def _run(directory: Path) -> list[dict[str, Any]]:
    say(f"PIE node demo: a 4-hospital consortium in {directory}")
    nodes = await asyncio.to_thread(cluster.up, directory, 4, None)
    for n in nodes:
        say(f"     {n['id']}: {n['api']} (pid {n['pid']})")
    await story(directory, nodes)
    return nodes


def run_demo(directory: Path | None, keep: bool) -> int:
    made = directory is None
    directory = Path(tempfile.mkdtemp(prefix="pie-demo-")) if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(_run(directory))
    finally:
        if not keep and (directory / cluster.CLUSTER_FILE).exists():
            cluster.down(directory)
    if keep:
        say(f"\nThe cluster is still running: pienode cluster status --dir {directory}")
    else:
        from pienode.ledger.verify import verify_home

        say("\n[13] The cluster is stopped; `pienode verify` on every home")
        for home in cluster.homes_of(directory):
            report = verify_home(home)
            check(report["ok"], f"{home.name}: {report['checked_blocks']} blocks, "
                                f"{report['checked_state_keys']} state keys verified")
        if made:
            shutil.rmtree(directory, ignore_errors=True)
    say("\nDemo complete.")
    return 0
