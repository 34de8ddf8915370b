"""Where a fresh 1 MB download's time goes, stage by stage (issue 7), on a running cluster.

    python3 benchmarks/download_breakdown.py --dir D [--runs 40] [--size 1000000] [--json]

Each run uploads a fresh record, waits (untimed) for the cluster to settle as
``bench paper`` does, then times one ``emr.fetch`` by the patient with the client's stages
wrapped: wall time (``perf_counter``) and the CPU time of the thread that ran the stage
(``thread_time``; the CID hash runs on the event loop's thread while a worker decrypts). Node CPU per download comes from /proc/<pid>/stat of the patient's hospital,
(all its threads, from schedstat) over the download. Medians over the runs (the machine is shared; means are noisy).

Benchmark instrumentation only: it wraps functions from the outside, never changes them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from pienode.bench.paper import _random_file, _register, settle
from pienode.cli import cluster
from pienode.client import download, emr, rawget, session, transfer
from pienode.client.session import Session
from pienode.crypto import pre

_wall: dict[str, list[float]] = defaultdict(list)
_cpu: dict[str, list[float]] = defaultdict(list)
_run: dict[str, list[float]] = {}
_marks: dict[str, float] = {}


def _note(name: str, wall: float, cpu: float) -> None:
    acc = _run.setdefault(name, [0.0, 0.0, 0.0])
    acc[0] += wall
    acc[1] += cpu
    acc[2] += 1


def _wrap(owner: Any, attr: str, name: str) -> None:
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def timed(*a: Any, **kw: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            _note(name, time.perf_counter() - t, time.thread_time() - c)

    setattr(owner, attr, timed)


def _wrap_async(owner: Any, attr: str, name: str) -> None:
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    async def timed(*a: Any, **kw: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return await fn(*a, **kw)
        finally:
            _note(name, time.perf_counter() - t, time.thread_time() - c)

    setattr(owner, attr, timed)


def _instrument() -> None:
    _wrap(session, "sign_headers", "sign request")
    _wrap(transfer.AtomicOutput, "__init__", "make temp output (while waiting)")
    _wrap(download, "own_dek", "open keys (loop)")
    _wrap(pre, "_parse_capsule", "  parse capsule (each)")
    _wrap(pre, "open_original", "  open key capsule")
    _wrap(download, "decrypt_buffer_to_file", "CID hash || decrypt+write, rename")
    _wrap(transfer.CidCheck, "feed", "  CID hash (loop)")
    _wrap(transfer, "_decrypt_parts", "  decrypt+write (worker)")
    _wrap(transfer.CidCheck, "check", "  CID finish")
    _wrap(transfer.AtomicOutput, "commit", "  close+rename")
    # Arrival marks: when the answer's head (and record) and its whole body were in.
    received = rawget._Answer.received

    async def marked(self: Any, nbytes: int) -> memoryview:
        out = await received(self, nbytes)
        key = "first bytes" if "first bytes" not in _marks else "body complete"
        if key == "first bytes" or len(out) == self.total - self.body_at:
            _marks.setdefault(key, time.perf_counter())
        return out

    rawget._Answer.received = marked  # type: ignore[method-assign]


def _node_cpu(pid: int) -> float:
    """Seconds on a CPU, all threads of the process (schedstat: nanoseconds, unlike the
    10 ms ticks of /proc/<pid>/stat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # a thread that just ended
    return total / 1e9


async def _runs(directory: Path, runs: int, size: int, work: Path) -> list[tuple[float, float, float]]:
    nodes = cluster.read_cluster(directory.resolve())["nodes"]
    urls = [n["api"] for n in nodes]
    tag = os.urandom(3).hex()
    pat_w = await _register(urls[0], work / "pat", "patient", "Breakdown Patient")
    doc_w = await _register(urls[1 % len(urls)], work / "doc", "physician", "Breakdown Physician")
    pid = next(n["pid"] for n in nodes if n["api"] == pat_w.node)
    src = work / "emr.bin"
    _random_file(src, size)
    _instrument()
    totals: list[tuple[float, float, float]] = []
    async with Session(doc_w, doc_w.node) as doc, Session(pat_w, pat_w.node) as pat, \
            aiohttp.ClientSession() as http:
        for i in range(runs + 1):
            rec = await emr.upload(doc, pat_w.user_id, src, "omics", {"bench": tag})
            await settle(http, urls, rec["cid"], rec["height"])
            out = work / "out.bin"
            _run.clear()
            _marks.clear()
            n0 = _node_cpu(pid)
            t0, c0 = time.perf_counter(), time.process_time()
            got = await emr.fetch(pat, rec["record_id"], out)
            t1, c1 = time.perf_counter(), time.process_time()
            n1 = _node_cpu(pid)
            assert got["size"] == size and got["via"] == "own key"
            out.unlink()
            if i == 0:
                continue  # the first run warms connections and imports
            totals.append((t1 - t0, c1 - c0, n1 - n0))
            for name, (w, c, _) in _run.items():
                _wall[name].append(w)
                _cpu[name].append(c)
            for name, at in _marks.items():
                _wall["at " + name].append(at - t0)
    return totals


async def run(directory: Path, runs: int, size: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pie-dlbreak-"))
    try:
        totals = await _runs(directory, runs, size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    return {
        "runs": runs, "bytes": size,
        "total_ms": {"median": med(t[0] for t in totals) * 1e3,
                     "mean": statistics.fmean(t[0] for t in totals) * 1e3},
        "client_cpu_ms_median": med(t[1] for t in totals) * 1e3,
        "node_cpu_ms_median": med(t[2] for t in totals) * 1e3,
        "node_cpu_ms_mean": statistics.fmean(t[2] for t in totals) * 1e3,
        "stages": {name: {"wall_ms": med(_wall[name]) * 1e3,
                          "cpu_ms": med(_cpu[name]) * 1e3 if name in _cpu else None}
                   for name in _wall},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = asyncio.run(run(args.dir, args.runs, args.size))
    if args.json:
        print(json.dumps(r, indent=1))
        return
    print(f"{r['runs']} downloads of {r['bytes']:,} bytes: total median {r['total_ms']['median']:.2f} ms, "
          f"mean {r['total_ms']['mean']:.2f} ms; client CPU median {r['client_cpu_ms_median']:.2f} ms; "
          f"node CPU median {r['node_cpu_ms_median']:.2f} ms (mean {r['node_cpu_ms_mean']:.2f})")
    print(f"{'stage':<32} {'wall ms':>8} {'cpu ms':>8}")
    for name, v in r["stages"].items():
        cpu = "" if v["cpu_ms"] is None else f"{v['cpu_ms']:8.3f}"
        print(f"{name:<32} {v['wall_ms']:8.3f} {cpu}")


if __name__ == "__main__":
    main()
