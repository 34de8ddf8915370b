"""Real processes: kill -9 in the middle of an upload, and peak RSS of a big streamed upload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pienode.files.admin import ls, verify
from pienode.files.store import PackStore

ROOT = Path(__file__).resolve().parents[2]

UPLOADER = r"""
import asyncio, os, sys
sys.path.insert(0, sys.argv[1])
from pienode.files.store import PackStore
from pienode.files.stream import ingest

store = PackStore(sys.argv[2])
mode = sys.argv[3]

async def first():
    # A complete, acknowledged file before the one that will be killed.
    async def one():
        yield b"committed file " * 50_000
    info = await ingest(store, one(), 1 << 40)
    print(info.cid, flush=True)

async def endless():
    n = 0
    while True:
        yield os.urandom(1 << 20)
        n += 1
        if n == 40:
            print("40MiB", flush=True)
        await asyncio.sleep(0)

async def big(total):
    for _ in range(total):
        yield os.urandom(1 << 20)

async def main():
    if mode == "crash":
        await first()
        await ingest(store, endless(), 1 << 40)
    else:
        import resource
        info = await ingest(store, big(int(mode)), 1 << 40)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(info.size, round(rss, 1), flush=True)

asyncio.run(main())
"""


def test_kill_9_mid_upload_leaves_nothing_half_visible(tmp_path: Path) -> None:
    d = tmp_path / "files"
    proc = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, str(ROOT), str(d), "crash"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        committed = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert committed.startswith("bafy") or committed.startswith("bafk")
        assert proc.stdout.readline().strip() == "40MiB"  # type: ignore[union-attr]
        packs = list((d / "packs").glob("*.pack"))
        deadline = time.monotonic() + 30
        while sum(p.stat().st_size for p in packs) < 20 << 20:  # data really hit the pack
            assert time.monotonic() < deadline
            time.sleep(0.01)
            packs = list((d / "packs").glob("*.pack"))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = PackStore(d)
    try:
        roots = ls(store)
        assert [r.cid for r in roots] == [committed]
        report = verify(store)
        assert report.ok, report.to_json()
        st = store.stats()
        assert st.pack_bytes == st.bytes_stored < 1 << 20  # the killed upload's bytes are gone
    finally:
        store.close()


def test_streamed_upload_peak_rss_stays_small(tmp_path: Path) -> None:
    baseline = subprocess.run(
        [sys.executable, "-c", "import resource, sys; sys.path.insert(0, sys.argv[1]);"
         "import pienode.files.stream, asyncio;"
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)", str(ROOT)],
        capture_output=True, text=True, check=True,
    )
    base = float(baseline.stdout)
    out = subprocess.run(
        [sys.executable, "-c", UPLOADER, str(ROOT), str(tmp_path / "files"), "256"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    size, rss = out.stdout.split()
    assert int(size) == 256 << 20
    # A 256 MiB upload may hold a few 4 MiB batches, never the file.
    assert float(rss) - base < 64, json.dumps({"base": base, "peak": rss})


def test_metrics_collector_reports_store_counters(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pienode.files.admin import FileStoreCollector

    store = PackStore(tmp_path / "files")
    try:
        w = store.writer()
        from pienode.files.unixfs import cid_of_bytes

        w.put(cid_of_bytes(b"abc"), b"abc")
        w.commit(cid_of_bytes(b"abc"), 3)
        reg = CollectorRegistry()
        reg.register(FileStoreCollector(lambda: store))
        text = generate_latest(reg).decode()
        assert "pie_files_bytes_stored 3.0" in text
        assert "pie_files_roots 1.0" in text
        assert "pie_files_chunks_repaired_total 0.0" in text
    finally:
        store.close()
