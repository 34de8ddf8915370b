"""CPU per transaction of the commit side alone: ``Executor.execute`` + ``Ledger.commit``.

Issue 3. One node's work once a batch is ordered, in one process, on a LevelDB store in a
temporary directory: ``upload_record`` transactions (the load generator's bodies) are first
admitted as a node admits them (filling the decoded-transaction and signature caches, not
timed), then executed and committed in blocks of ``--block`` transactions (the mean block
at ``bench load`` concurrency 256 is ~45), with the state read cache a node puts in front
of its store. Reports thread CPU per transaction, which, unlike wall time, holds up on a
shared machine.

To compare two trees on a busy machine, run both at the same time so they share its load:

    PYTHONPATH=A python3 A/benchmarks/commit_bench.py & PYTHONPATH=B python3 B/benchmarks/commit_bench.py; wait
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pienode.bench.txgen import UploadSpec, upload_body  # noqa: E402
from pienode.crypto.keys import PrivateKey  # noqa: E402
from pienode.ledger import keys  # noqa: E402
from pienode.ledger.executor import Executor  # noqa: E402
from pienode.ledger.state import StateOverlay  # noqa: E402
from pienode.ledger.store import Ledger  # noqa: E402
from pienode.ledger.validation import TxCaches, check_transaction  # noqa: E402
from pienode.storage.cache import CachedKV  # noqa: E402
from pienode.storage.kv import open_kv  # noqa: E402
from tests.helpers import commit, make_consortium, now_ms  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--txs", type=int, default=4000)
    p.add_argument("--block", type=int, default=50)
    args = p.parse_args()
    c = make_consortium(4)
    tmp = Path(tempfile.mkdtemp(prefix="pie-commit-bench-"))
    try:
        kv = CachedKV(open_kv(tmp / "ledger"), keys.STATE)
        caches = TxCaches()
        ledger = Ledger(kv, c.genesis, Executor(c.genesis, kv, caches=caches))
        regs = []
        for i in range(4):
            regs.append(c.register_tx(f"pat-{i:016x}", "patient"))
            regs.append(c.register_tx(f"phy-{i:016x}", "physician", f"hospital-{i + 1}"))
        commit(ledger, regs)
        pub = tuple(PrivateKey.from_bytes(hashlib.sha256(s).digest()).public_key.data for s in (b"d", b"v"))
        ts = now_ms()
        txs = []
        for s in range(args.txs):
            i = s % 4
            spec = UploadSpec("", f"phy-{i:016x}", f"pat-{i:016x}", c.genesis.chain_id, ts, "commit-bench")
            body = upload_body(spec, s, pub)  # type: ignore[arg-type]
            txs.append(c.user_tx(f"phy-{i:016x}", "upload_record", body, ts=ts).encode())
        view = StateOverlay(kv)
        for data in txs:
            check_transaction(data, genesis=c.genesis, state=view, now_ms=ts, caches=caches)
        per_block = []
        start = time.thread_time()
        for lo in range(0, len(txs), args.block):
            t0 = time.thread_time()
            block, writes = ledger.executor.execute(ledger.head, tuple(txs[lo:lo + args.block]), timestamp_ms=ts,
                                                    proposer="pbft", view=0, batch_digest=bytes(32))
            if not all(r.ok for r in block.receipts):
                raise SystemExit(f"a transaction failed: {block.receipts}")
            ledger.commit(block, writes)
            per_block.append((time.thread_time() - t0) / len(block.txs) * 1e6)
        total = time.thread_time() - start
        kv.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"txs": args.txs, "block": args.block, "cpu_us_per_tx": round(total / args.txs * 1e6, 1),
                      "block_median_us_per_tx": round(statistics.median(per_block), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
