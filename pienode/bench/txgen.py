"""Pre-signed ``upload_record`` transactions for load generation.

Signing is kept off the submit path: transactions are signed up front, in a pool of worker
processes when there are many, and handed to the submitters as ready-to-send JSON pieces.
Every body is distinct (its own summary sequence number and CID), so every transaction has
its own id. This module never talks to a node.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from pienode.crypto.keys import PrivateKey
from pienode.ledger.tx import Transaction

#: Below this many transactions a process pool costs more than it saves.
POOL_THRESHOLD = 2000


@dataclass(frozen=True, slots=True)
class SignedTx:
    tx_id: str  # hex
    b64: str    # base64 of the wire bytes, ready for a JSON body


@dataclass(frozen=True, slots=True)
class UploadSpec:
    secret_hex: str       # the physician's signing secret (stays in this process tree)
    physician_id: str
    patient_id: str
    chain_id: str
    timestamp_ms: int
    run_tag: str          # distinguishes the bodies of two runs with the same keys


def fake_cid(seed: bytes) -> str:
    """A syntactically valid CIDv1 (base32, lower case) derived from ``seed``."""
    digest = hashlib.sha256(seed).digest()
    return "b" + base64.b32encode(b"\x01\x55\x12\x20" + digest).decode().lower().rstrip("=")


def upload_body(spec: UploadSpec, seq: int, keys: tuple[bytes, bytes]) -> dict:
    return {
        "record_id": "rec-" + hashlib.sha256(f"{spec.run_tag}/{seq}/{spec.physician_id}".encode()).hexdigest()[:32],
        "patient_id": spec.patient_id,
        "data_type": "omics",
        "summary": {"disease": "diabetes", "age_band": "40-49", "bench_run": spec.run_tag, "bench_seq": seq},
        "cid": fake_cid(f"{spec.run_tag}/{seq}".encode()),
        "size": 1024 + seq,
        "capsule": b"\x01" * 98,
        "delegating_key": keys[0],
        "verifying_key": keys[1],
        "sealed_keys": {spec.patient_id: b"sealed-" + seq.to_bytes(4, "big")},
        "policy": {"level": "low", "roles": None, "purposes": None, "expires_at_ms": None},
    }


def _sign_range(spec: UploadSpec, lo: int, hi: int) -> list[SignedTx]:
    key = PrivateKey.from_bytes(bytes.fromhex(spec.secret_hex))
    # Two fixed, valid public keys: the chain checks their form, not what they unlock.
    pub = (PrivateKey.from_bytes(hashlib.sha256(b"bench-d").digest()).public_key.data,
           PrivateKey.from_bytes(hashlib.sha256(b"bench-v").digest()).public_key.data)
    out = []
    for seq in range(lo, hi):
        tx = Transaction.create(key, chain_id=spec.chain_id, kind="upload_record", sender=spec.physician_id,
                                timestamp_ms=spec.timestamp_ms, body=upload_body(spec, seq, pub))
        out.append(SignedTx(tx.tx_id.hex(), base64.b64encode(tx.encode()).decode()))
    return out


def _worker_init() -> None:
    """Forked workers inherit the parent's asyncio signal set-up, which would make them
    deaf to SIGTERM and SIGINT; give them the default behaviour back."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sign_uploads(spec: UploadSpec, count: int, workers: int | None = None) -> list[SignedTx]:
    """``count`` distinct signed uploads, in order; uses worker processes for large counts."""
    workers = workers or min(4, os.cpu_count() or 1)
    if count < POOL_THRESHOLD or workers <= 1:
        return _sign_range(spec, 0, count)
    step = -(-count // (workers * 4))
    bounds = [(lo, min(lo + step, count)) for lo in range(0, count, step)]
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        parts = pool.map(_sign_range, [spec] * len(bounds), [b[0] for b in bounds], [b[1] for b in bounds])
        return [t for part in parts for t in part]
