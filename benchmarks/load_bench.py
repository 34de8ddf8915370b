"""Issue 3's performance scenario: `pienode bench load` on a fresh local cluster.

Runs each scenario (N transactions at concurrency C, K per request) through the real CLI
against a fresh N-node cluster and reports, besides the bench's own figures, the CPU time
the nodes and the load generator spent per committed transaction. On a machine shared with
other work the wall-clock rate says little; CPU-ms per transaction does not depend on it,
and ``cores * 1000 / cpu_ms_per_tx`` is the rate this machine would sustain with its cores
to itself. Also measures the ceiling that signature verification alone sets (every node
verifies every transaction once).

    python3 benchmarks/load_bench.py                         # 300 x 1 and 20000 x 256
    python3 benchmarks/load_bench.py --scenario 2000x64x50   # txs x concurrency [x batch]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pienode.cli.operator", *args], capture_output=True, text=True,
                          env=env(), **kw)  # type: ignore[call-overload]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU of ``pid`` and of its reaped children (contract workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


def verify_ceiling(nodes: int) -> dict[str, float]:
    from pienode.crypto.keys import PrivateKey

    key = PrivateKey.generate()
    msg = os.urandom(600)
    sig = key.sign("tx", msg)
    pub = key.public_key
    n = 3000
    t = time.process_time()
    for _ in range(n):
        pub.verify("tx", msg, sig)
    us = (time.process_time() - t) / n * 1e6
    cores = os.cpu_count() or 1
    return {"verify_us": round(us, 1), "cores": cores,
            "ceiling_tps": round(cores * 1e6 / (us * nodes)), "nodes_verifying_each_tx": nodes}


def run_scenario(directory: Path, txs: int, conc: int, batch: int) -> dict[str, object]:
    nodes = json.loads((directory / "cluster.json").read_text())["nodes"]
    before = {n["id"]: proc_cpu_s(n["pid"]) for n in nodes}
    load0 = os.getloadavg()[0]
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = cli("bench", "load", "--dir", str(directory), "--txs", str(txs), "--concurrency", str(conc),
            "--batch", str(batch), "--json", timeout=1800)
    wall = time.monotonic() - t0
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not r.stdout.strip():
        raise SystemExit(f"bench load failed: {r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    node_cpu = {n["id"]: round(proc_cpu_s(n["pid"]) - before[n["id"]], 2) for n in nodes}
    client_cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    total_nodes = sum(node_cpu.values())
    committed = max(1, int(out["committed"]))
    per_tx = (total_nodes + client_cpu) * 1000 / committed
    cores = os.cpu_count() or 1
    out.update({
        "cmd": f"pienode bench load --dir DIR --txs {txs} --concurrency {conc} --batch {batch} --json",
        "wall_s": round(wall, 1),
        "node_cpu_s": node_cpu,
        "client_cpu_s": round(client_cpu, 2),
        "cpu_ms_per_tx": {"nodes": round(total_nodes * 1000 / committed, 3),
                          "client": round(client_cpu * 1000 / committed, 3), "total": round(per_tx, 3)},
        "dedicated_cores_tps_estimate": round(cores * 1000 / per_tx) if per_tx else None,
        "loadavg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
    })
    return out


def parse_scenario(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in text.lower().split("x")]
    if len(parts) == 2:
        parts.append(1)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("scenario is TXSxCONCURRENCY[xBATCH]")
    return parts[0], parts[1], parts[2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", type=parse_scenario,
                   help="TXSxCONCURRENCY[xBATCH]; repeat (default: 300x1 and 20000x256)")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--fresh", action="store_true", help="a fresh cluster for every scenario")
    p.add_argument("--keep", default=None, help="cluster directory to use and keep (default: a temp dir)")
    args = p.parse_args()
    scenarios = args.scenario or [(300, 1, 1), (20000, 256, 1)]
    results: list[dict[str, object]] = []
    report: dict[str, object] = {"verify": verify_ceiling(args.nodes), "scenarios": results}
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pie-load-"))
    for i, (txs, conc, batch) in enumerate(scenarios):
        directory = base / (f"cluster-{i}" if args.fresh else "cluster")
        if args.fresh or i == 0:
            up = cli("cluster", "up", "--dir", str(directory), "--nodes", str(args.nodes), "--detach", "--json",
                     timeout=120)
            if up.returncode != 0:
                raise SystemExit(f"cluster up failed: {up.stderr}")
        try:
            res = run_scenario(directory, txs, conc, batch)
        finally:
            if args.fresh or i == len(scenarios) - 1:
                cli("cluster", "down", "--dir", str(directory), timeout=60)
        results.append(res)
        print(json.dumps(res), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
