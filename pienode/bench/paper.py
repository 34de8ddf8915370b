"""``pienode bench paper``: the design paper's simulation, reproduced on a running cluster.

What it measures, as the paper defines it (Simulation Results; Table 7):
- EMR upload: encrypt on the physician's machine, store (acknowledged once f+1 hospitals
  hold it), and commit the upload transaction. Sizes 0.4 kB, 1 MB, 10 MB, 100 MB, 1 GB.
- EMR download: fetch from the patient's hospital and decrypt (constant memory).
- The re-key request round: request (policy check by the contract), the patient's grant
  (threshold key fragments sealed to every hospital), and the requester opening the DEK from
  t fragments: the paper's 3.35 s smart-contract round.
Figures are wall-clock seconds per operation, mean and standard deviation, with medians.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pienode.cli import cluster
from pienode.cli.wallet import Wallet
from pienode.client import emr
from pienode.client.session import Session
from pienode.crypto import grants, pre_rules
from pienode.crypto.pre import PrePublicKey

PAPER_SIZES = (400, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000)
#: The design paper's figures (Fabric 2.3 + IPFS, i7-10700K).
PAPER = {
    "upload_seconds": {400: 2.1, 1_000_000: 2.1, 10_000_000: 2.1, 100_000_000: 2.1, 500_000_000: 4.5,
                       1_000_000_000: 5.7},
    "download_1mb_seconds": 0.01014,
    "rekey_seconds_mean": 3.3543,
    "rekey_seconds_sd": 0.4959,
}
#: Longest untimed wait, per upload, for every hospital to settle (see ``settle``).
SETTLE_TIMEOUT_S = 120.0
#: How often ``settle`` asks each node.
SETTLE_POLL_S = 0.005


async def settle(http: aiohttp.ClientSession, urls: list[str], cid: str, height: int,
                 timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Untimed, between an upload and the timed download of the same record: wait until
    every hospital has committed the upload's block (``height``) and holds the whole file.

    Why: the upload is acknowledged once f+1 hospitals hold the file; the other replicas
    are still pulling and hashing it, and the other nodes still executing its block. On a
    small machine that tail competes with the download for the CPU, which then times the
    upload's leftovers, not the download; the paper times the two separately. The record
    is still fresh: no key or plaintext is kept between the two. Returns False if the
    cluster did not settle within ``timeout_s`` (the download is timed anyway).
    """
    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        still = []
        for url in pending:
            try:
                async with http.get(f"{url}/status") as r:
                    at = (await r.json())["height"] if r.status == 200 else -1
                async with http.get(f"{url}/files/{cid}/stat") as r:  # this node's own copy only
                    whole = r.status == 200 and (await r.json())["complete"]
            except (aiohttp.ClientError, KeyError, ValueError):
                at, whole = -1, False
            if at < height or not whole:
                still.append(url)
        pending = still
        if pending:
            await asyncio.sleep(SETTLE_POLL_S)
    return not pending


@dataclass
class PaperOptions:
    max_bytes: int = 1_000_000_000
    runs: int = 5
    large_runs: int = 2
    rekey_runs: int = 1000
    progress: bool | None = None
    #: Only these of ``PAPER_SIZES`` (None: all up to ``max_bytes``).
    sizes: tuple[int, ...] | None = None


def _stats(samples: list[float]) -> dict[str, Any]:
    return {
        "runs": len(samples),
        "seconds": statistics.fmean(samples),
        "seconds_sd": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "seconds_median": statistics.median(samples),
        "seconds_min": min(samples),
    }


class Bar:
    def __init__(self, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")


async def _register(url: str, path: Path, role: str, name: str) -> Wallet:
    from pienode.demo import register

    return await register(url, path, role, name)


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


async def rekey_round(requester: Session, patient: Session, record: dict[str, Any]) -> float:
    """One request -> policy check -> grant -> requester opens the DEK round; seconds."""
    t0 = time.perf_counter()
    req = await emr.request(requester, record["record_id"], "treatment")
    await emr.grant(patient, req["request_id"])
    logged = await requester.submit("record_access", {"record_id": record["record_id"]})
    if logged["result"]["status"] != "granted":
        raise RuntimeError(f"access refused in the re-key round: {logged['result']}")
    need = pre_rules.grant_threshold(len(requester.genesis.nodes))
    cfrags = await emr._cfrags(requester, record["record_id"], logged["tx_id"], need)
    dek = grants.open_grant(requester.enc_sk, PrePublicKey.from_bytes(record["delegating_key"]), record["capsule"],
                            cfrags, PrePublicKey.from_bytes(record["verifying_key"]))
    assert len(dek) == 32
    return time.perf_counter() - t0


async def run_paper(directory: Path, opts: PaperOptions) -> dict[str, Any]:
    nodes = cluster.read_cluster(directory.resolve())["nodes"]
    urls = [n["api"] for n in nodes]
    bar = Bar(opts.progress)
    work = Path(tempfile.mkdtemp(prefix="pie-bench-"))
    try:
        tag = os.urandom(3).hex()
        patient_w = await _register(urls[0], work / f"patient-{tag}", "patient", "Bench Patient")
        physician_w = await _register(urls[1 % len(urls)], work / f"physician-{tag}", "physician", "Bench Physician")
        requester_w = await _register(urls[2 % len(urls)], work / f"requester-{tag}", "physician", "Bench Requester")
        uploads, downloads = [], []
        unsettled = 0
        async with Session(physician_w, physician_w.node) as doc, Session(patient_w, patient_w.node) as pat, \
                Session(requester_w, requester_w.node) as req, aiohttp.ClientSession() as http:
            for size in [s for s in PAPER_SIZES if s <= opts.max_bytes and (opts.sizes is None or s in opts.sizes)]:
                src = work / f"emr-{size}.bin"
                _random_file(src, size)
                runs = opts.runs if size <= 10_000_000 else opts.large_runs
                up, down = [], []
                for i in range(runs):
                    bar.show(f"upload/download {size:,} bytes: run {i + 1}/{runs}")
                    t = time.perf_counter()
                    rec = await emr.upload(doc, patient_w.user_id, src, "omics", {"bench": tag})
                    up.append(time.perf_counter() - t)
                    out = work / "fetched.bin"
                    if not await settle(http, urls, rec["cid"], rec["height"]):
                        unsettled += 1
                    t = time.perf_counter()
                    got = await emr.fetch(pat, rec["record_id"], out)
                    down.append(time.perf_counter() - t)
                    if got["size"] != size:
                        raise RuntimeError("downloaded size differs")
                    out.unlink()
                src.unlink()
                uploads.append({"bytes": size, **_stats(up)})
                downloads.append({"bytes": size, **_stats(down)})
            samples = []
            if opts.rekey_runs:
                small = work / "rekey.bin"
                small.write_bytes(os.urandom(400))
                rec = await emr.upload(doc, patient_w.user_id, small, "omics", {"bench": tag})
                record = await req.record(rec["record_id"])
            for i in range(opts.rekey_runs):
                if i % 10 == 0:
                    bar.show(f"re-key round {i + 1}/{opts.rekey_runs}")
                samples.append(await rekey_round(req, pat, record))
        bar.done()
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if samples:
        rk = _stats(samples)
        rekey = {"runs": rk["runs"], "seconds_mean": rk["seconds"], "seconds_sd": rk["seconds_sd"],
                 "seconds_median": rk["seconds_median"],
                 "seconds_p99": sorted(samples)[max(0, int(len(samples) * 0.99) - 1)]}
    else:  # --rekey-runs 0
        rekey = {"runs": 0, "seconds_mean": 0.0, "seconds_sd": 0.0, "seconds_median": 0.0, "seconds_p99": 0.0}
    return {
        "upload": uploads,
        "download": downloads,
        "rekey": rekey,
        "paper": PAPER,
        "ratios": _ratios(uploads, downloads, rekey),
        "downloads_timed_before_the_cluster_settled": unsettled,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "nodes": len(nodes)},
    }


def _ratios(uploads: list[dict[str, Any]], downloads: list[dict[str, Any]], rekey: dict[str, Any]) -> dict[str, Any]:
    """How many times faster than the paper (paper time / our mean time)."""
    out: dict[str, Any] = {}
    for u in uploads:
        paper = PAPER["upload_seconds"].get(u["bytes"])
        if paper:
            out[f"upload_{u['bytes']}"] = round(paper / u["seconds"], 2)
    for d in downloads:
        if d["bytes"] == 1_000_000:
            out["download_1000000"] = round(PAPER["download_1mb_seconds"] / d["seconds"], 2)
    if rekey["runs"]:
        out["rekey"] = round(PAPER["rekey_seconds_mean"] / rekey["seconds_mean"], 2)
    return out


def human(r: dict[str, Any]) -> str:
    lines = ["EMR upload (encrypt + store on f+1 hospitals + commit) and download (fetch + decrypt)",
             (f"{'size':>14}  {'upload s':>10} {'sd':>8}  {'paper s':>7} {'x faster':>8}   {'download s':>10}"
              f" {'sd':>8} {'median':>8}")]
    for u, d in zip(r["upload"], r["download"]):
        paper = PAPER["upload_seconds"].get(u["bytes"], 0)
        lines.append(f"{u['bytes']:>14,}  {u['seconds']:>10.4f} {u['seconds_sd']:>8.4f}  {paper:>7.1f} "
                     f"{paper / u['seconds']:>8.1f}   {d['seconds']:>10.4f} {d['seconds_sd']:>8.4f}"
                     f" {d['seconds_median']:>8.4f}")
    rk = r["rekey"]
    lines.append(f"re-key round ({rk['runs']} runs): mean {rk['seconds_mean'] * 1000:.1f} ms, "
                 f"sd {rk['seconds_sd'] * 1000:.1f} ms, median {rk['seconds_median'] * 1000:.1f} ms "
                 f"(paper {PAPER['rekey_seconds_mean']:.3f} s: {r['ratios'].get('rekey', 0)}x)")
    return "\n".join(lines)


def main_paper(directory: Path, opts: PaperOptions) -> dict[str, Any]:
    return asyncio.run(run_paper(directory, opts))
