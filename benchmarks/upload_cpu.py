"""CPU of 1 GB EMR uploads on a running cluster, per process and per node thread (issue 7).

On a shared machine wall-clock time is noise; CPU-seconds per upload are not (much). For each
upload (``pie``'s own ``emr.upload``: encrypt, POST /files, push to the acknowledging
hospital, commit) this prints the client's CPU, each node's CPU during the upload (from
/proc/PID/stat), the two busy nodes split into event-loop thread and worker threads
(user/system), and each node's CPU afterwards while the other hospitals pull the file
(untimed in ``bench paper``, which waits for it: ``settle``).

    pienode cluster up --dir D --detach
    python3 benchmarks/upload_cpu.py --dir D --runs 3 [--bytes 1000000000] [--json]
    pienode cluster down --dir D

The physician uploads through hospital-2 (as in ``bench paper``), which pushes to hospital-1.
Each run stores the file on every node: mind the disk (4 x size per run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from pienode.bench import paper
from pienode.cli import cluster
from pienode.client import emr
from pienode.client.session import Session

TICK = os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> dict[str, tuple[float, float]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) / TICK, int(fields[12]) / TICK)
    return out


def _process(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _split(pid: int, a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]) -> dict[str, float]:
    """CPU between two ``_threads`` samples: the event loop (main thread) and the rest."""
    out = {"loop_user": 0.0, "loop_sys": 0.0, "workers_user": 0.0, "workers_sys": 0.0}
    for tid, (u, s) in b.items():
        u0, s0 = a.get(tid, (0.0, 0.0))
        who = "loop" if tid == str(pid) else "workers"
        out[f"{who}_user"] += u - u0
        out[f"{who}_sys"] += s - s0
    return {k: round(v, 2) for k, v in out.items()}


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(directory: Path, runs: int, size: int) -> dict[str, Any]:
    nodes = cluster.read_cluster(directory.resolve())["nodes"]
    urls = [n["api"] for n in nodes]
    pids = [n["pid"] for n in nodes]
    work = Path(tempfile.mkdtemp(prefix="pie-upload-cpu-"))
    rows = []
    try:
        tag = os.urandom(3).hex()
        patient = await paper._register(urls[0], work / "patient", "patient", "CPU Patient")
        doctor = await paper._register(urls[1], work / "physician", "physician", "CPU Physician")
        src = work / "emr.bin"
        paper._random_file(src, size)
        async with Session(doctor, doctor.node) as s, aiohttp.ClientSession() as http:
            for _ in range(runs):
                t0 = [_threads(p) for p in pids[:2]]
                c0, s0, w0 = [_process(p) for p in pids], _self_cpu(), time.perf_counter()
                rec = await emr.upload(s, patient.user_id, src, "omics", {"bench": tag})
                wall = time.perf_counter() - w0
                c1, s1 = [_process(p) for p in pids], _self_cpu()
                t1 = [_threads(p) for p in pids[:2]]
                settled = await paper.settle(http, urls, rec["cid"], rec["height"])
                c2 = [_process(p) for p in pids]
                row = {
                    "wall_s": round(wall, 3),
                    "client_cpu_s": round(s1 - s0, 2),
                    "nodes_cpu_s": [round(b - a, 2) for a, b in zip(c0, c1)],
                    "ingest_node": _split(pids[1], t0[1], t1[1]),
                    "replica_node": _split(pids[0], t0[0], t1[0]),
                    "nodes_cpu_after_s": [round(b - a, 2) for a, b in zip(c1, c2)],
                    "settled": settled,
                }
                row["total_cpu_s"] = round(row["client_cpu_s"] + sum(row["nodes_cpu_s"]), 2)
                rows.append(row)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return {
        "bytes": size,
        "runs": rows,
        "median_wall_s": statistics.median(r["wall_s"] for r in rows),
        "median_total_cpu_s": statistics.median(r["total_cpu_s"] for r in rows),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True, help="the cluster's directory (cluster.json)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=1_000_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = asyncio.run(measure(args.dir, args.runs, args.bytes))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for r in result["runs"]:
        print(json.dumps(r))
    print(f"median wall {result['median_wall_s']:.2f} s, median CPU {result['median_total_cpu_s']:.2f} s "
          f"(client + nodes, during the upload); load average {result['load_average'][0]:.1f}")


if __name__ == "__main__":
    main()
