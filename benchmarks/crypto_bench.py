"""Cryptography micro-benchmarks, ours next to the limit beneath them, in one run.

    python3 benchmarks/crypto_bench.py [--mib 64] [--reps 5] [--json]

Reports medians of ``--reps`` runs:
- record streams (``pienode.crypto.stream``): encrypt / decrypt MiB/s at several chunk sizes,
  against raw AES-256-GCM over the same chunks (no re-chunking, no stream format) and on one
  whole buffer (what OpenSSL does with no framing at all);
- proxy re-encryption (``pienode.crypto.pre``) per call in µs, against the bare umbral-pre
  calls it wraps (the wrapper adds parsing and verification, which the raw column lacks
  where noted);
- sealing (``pienode.crypto.seal``);
- the cryptography of one whole re-key round (``pienode.crypto.grants``);
- signatures: ``pienode.crypto.keys`` (libsecp256k1) against pure-Python ``ecdsa``.

This is a measurement tool, never imported by the node.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import umbral_pre as u  # noqa: E402  (raw baseline only; the node uses pienode.crypto.pre)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from ecdsa import SECP256k1, SigningKey  # noqa: E402
from ecdsa.util import sigdecode_string, sigencode_string  # noqa: E402

from pienode.crypto import grants, pre, seal, stream  # noqa: E402
from pienode.crypto.keys import PrivateKey  # noqa: E402
from pienode.encoding import signing_payload  # noqa: E402

MiB = 1024 * 1024


def median_seconds(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_medians(fns: list[Callable[[], object] | None], reps: int) -> list[float | None]:
    """Median seconds of each function, run in turn within every repetition.

    The machine is shared: alternating the contenders inside each repetition exposes them to
    the same background load, so their ratio means something even when the absolute numbers
    move.
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            if fn is None:
                continue
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) if t else None for t in times]


def per_call_us(
    fns: list[Callable[[], object] | None], reps: int, calls: int
) -> list[float | None]:
    """Interleaved medians over ``reps`` batches of ``calls`` calls, per call in µs."""

    def batch(fn: Callable[[], object] | None) -> Callable[[], object] | None:
        return None if fn is None else (lambda: [fn() for _ in range(calls)])

    return [
        None if m is None else round(m / calls * 1e6, 1)
        for m in interleaved_medians([batch(f) for f in fns], reps)
    ]


def read_pieces(data: memoryview, size: int) -> Iterator[memoryview]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def bench_stream(mib: int, reps: int) -> dict[str, object]:
    key = os.urandom(32)
    data = os.urandom(mib * MiB)
    view = memoryview(data)
    out: dict[str, object] = {"mib": mib}

    aead = AESGCM(key)
    nonce = os.urandom(12)
    one = median_seconds(lambda: aead.encrypt(nonce, data, b""), reps)
    out["aesgcm_one_buffer_mib_s"] = round(mib / one)

    rows = []
    for chunk in [64 * 1024 - 16, 256 * 1024 - 16, MiB - 16, 4 * MiB - 16]:

        def raw() -> None:
            for i in range(0, len(data), chunk):
                aead.encrypt(nonce, view[i : i + chunk], b"h")

        def enc() -> int:
            n = 0
            for c in stream.encrypt_stream(key, read_pieces(view, MiB), chunk):
                n += len(c)
            return n

        def enc_aligned() -> int:
            first = stream.chunk_capacity(0, chunk)
            pieces = itertools.chain([view[:first]], read_pieces(view[first:], 4 * chunk))
            return sum(len(c) for c in stream.encrypt_stream(key, pieces, chunk))

        ct = b"".join(stream.encrypt_stream(key, read_pieces(view, MiB), chunk))
        ct_view = memoryview(ct)

        def dec() -> int:
            n = 0
            # The ciphertext arrives as the file store's 256 KiB chunks.
            for p in stream.decrypt_stream(key, read_pieces(ct_view, 256 * 1024)):
                n += len(p)
            return n

        assert dec() == len(data)
        names = ["raw_aesgcm_chunks", "encrypt", "encrypt_aligned_reads", "decrypt"]
        medians = interleaved_medians([raw, enc, enc_aligned, dec], reps)
        row: dict[str, object] = {"chunk": chunk}
        for name, m in zip(names, medians):
            assert m is not None
            row[name + "_mib_s"] = round(mib / m)
        rows.append(row)
        del ct, ct_view
    out["chunk_sizes"] = rows
    sha = median_seconds(lambda: hashlib.sha256(data).digest(), reps)
    out["sha256_mib_s"] = round(mib / sha)
    return out


def bench_pre(reps: int, calls: int) -> dict[str, object]:
    d_sk, d_pk = pre.generate_keypair()
    signer = pre.PreSecretKey.generate()
    r_sk, r_pk = pre.generate_keypair()
    kc, dek = pre.encapsulate(d_pk)
    kfrags = pre.generate_kfrags(d_sk, r_pk, signer, 2, 4)
    keys = {"delegating_pk": d_pk, "receiving_pk": r_pk, "verifying_pk": signer.public_key}
    cfrags = [pre.reencrypt(kc, k, **keys) for k in kfrags[:2]]
    assert pre.open_reencrypted(r_sk, d_pk, kc, cfrags, verifying_pk=signer.public_key) == dek

    ud, upk, us = d_sk.umbral, d_pk.umbral, u.Signer(signer.umbral)
    ur, urpk = r_sk.umbral, r_pk.umbral
    cap, ct = u.encrypt(upk, dek)
    ukf = u.generate_kfrags(ud, urpk, us, 2, 4, True, True)
    ucf = [u.reencrypt(cap, k) for k in ukf[:2]]
    raw_kf = [bytes(k) for k in ukf]
    raw_cf = [bytes(c) for c in ucf]
    vpk = signer.public_key.umbral

    def raw_reencrypt_verified() -> object:
        k = u.KeyFrag.from_bytes(raw_kf[0]).verify(vpk, upk, urpk)
        return u.reencrypt(cap, k)

    def raw_open_verified() -> object:
        vc = [u.CapsuleFrag.from_bytes(c).verify(cap, vpk, upk, urpk) for c in raw_cf]
        return u.decrypt_reencrypted(ur, upk, cap, vc, ct)

    node_pk = r_pk
    blob = seal.seal(node_pk, kfrags[0], b"kfrag/x")
    raw_cap = bytes(cap)
    # (operation, ours, raw umbral-pre doing the same from already-parsed objects,
    #  raw umbral-pre doing the same from bytes with the same checks as ours)
    Op = Callable[[], object]
    cases: list[tuple[str, Op | None, Op | None, Op | None]] = [
        ("encapsulate", lambda: pre.encapsulate(d_pk), lambda: u.encrypt(upk, dek), None),
        (
            "open_original",
            lambda: pre.open_original(d_sk, kc),
            lambda: u.decrypt_original(ud, cap, ct),
            lambda: u.decrypt_original(ud, u.Capsule.from_bytes(raw_cap), ct),
        ),
        (
            "generate_kfrags t=2 n=4",
            lambda: pre.generate_kfrags(d_sk, r_pk, signer, 2, 4),
            lambda: u.generate_kfrags(ud, urpk, us, 2, 4, True, True),
            None,
        ),
        (
            "reencrypt (node; verifies kfrag)",
            lambda: pre.reencrypt(kc, kfrags[0], **keys),
            lambda: u.reencrypt(cap, ukf[0]),
            raw_reencrypt_verified,
        ),
        (
            "open_reencrypted 2 cfrags (verifies)",
            lambda: pre.open_reencrypted(r_sk, d_pk, kc, cfrags, verifying_pk=signer.public_key),
            lambda: u.decrypt_reencrypted(ur, upk, cap, ucf, ct),
            raw_open_verified,
        ),
        (
            "seal 310-byte kfrag",
            lambda: seal.seal(node_pk, kfrags[0], b"kfrag/x"),
            lambda: u.encrypt(urpk, raw_kf[0]),
            None,
        ),
        ("unseal", lambda: seal.unseal(r_sk, blob, b"kfrag/x"), None, None),
        ("(capsule parse, uncached)", None, lambda: u.Capsule.from_bytes(raw_cap), None),
    ]
    rows = []
    for name, ours, raw, raw_checked in cases:
        o, r, c = per_call_us([ours, raw, raw_checked], reps, calls)
        rows.append(
            {"op": name, "ours_us": o, "raw_umbral_us": r, "raw_umbral_same_checks_us": c}
        )
    return {"calls_per_rep": calls, "ops": rows}


def bench_rekey_round(reps: int, calls: int) -> dict[str, object]:
    """The cryptography of one re-key round on a 4-node consortium, end to end in one process.

    Grantor: unseal the record version's key, make a 2-of-4 grant sealed to the nodes.
    Two nodes: unseal their kfrag, verify it, re-encrypt. Requester: verify, combine, open.
    """
    nodes = [pre.generate_keypair() for _ in range(4)]
    node_pks = [pk for _, pk in nodes]
    patient_sk, patient_pk = pre.generate_keypair()
    requester_sk, requester_pk = pre.generate_keypair()
    signer = pre.PreSecretKey.generate()
    keys, dek = grants.new_record_version([patient_pk], "r", 1)

    def round_trip() -> bytes:
        d_sk = grants.open_record_key(
            patient_sk, keys.sealed_delegating_sk[0], "r", 1, keys.delegating_pk
        )
        sealed = grants.make_grant(d_sk, requester_pk, signer, node_pks, "g")
        cfrags = [
            grants.serve_fragment(
                nodes[i][0],
                i,
                sealed[i],
                "g",
                keys.key_capsule,
                delegating_pk=keys.delegating_pk,
                requester_pk=requester_pk,
                verifying_pk=signer.public_key,
            )
            for i in (1, 3)
        ]
        return grants.open_grant(
            requester_sk, keys.delegating_pk, keys.key_capsule, cfrags, signer.public_key
        )

    assert round_trip() == dek
    (us,) = per_call_us([round_trip], reps, max(1, calls // 10))
    return {"rekey_round_crypto_us": us, "nodes": 4, "threshold": 2}


def bench_signatures(reps: int, calls: int) -> dict[str, object]:
    key = PrivateKey.generate()
    pub = key.public_key
    payload = os.urandom(500)
    sig = key.sign("tx", payload)
    sk = SigningKey.from_string(key.to_bytes(), curve=SECP256k1)
    vk = sk.get_verifying_key()
    msg = signing_payload("tx", payload)
    esig = sk.sign(msg, hashfunc=hashlib.sha256, sigencode=sigencode_string)
    assert pub.verify("tx", payload, sig)
    assert vk.verify(sig, msg, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)
    slow_calls = max(1, calls // 20)
    fast_sign, fast_verify = per_call_us(
        [lambda: key.sign("tx", payload), lambda: pub.verify("tx", payload, sig)], reps, calls
    )
    slow_sign, slow_verify = per_call_us(
        [
            lambda: sk.sign(msg, hashfunc=hashlib.sha256, sigencode=sigencode_string),
            lambda: vk.verify(esig, msg, hashfunc=hashlib.sha256, sigdecode=sigdecode_string),
        ],
        reps,
        slow_calls,
    )
    return {
        "sign_us": {"pienode_coincurve": fast_sign, "ecdsa_pure_python": slow_sign},
        "verify_us": {"pienode_coincurve": fast_verify, "ecdsa_pure_python": slow_verify},
    }


def print_text(result: dict[str, Any]) -> None:
    s = result["stream"]
    assert isinstance(s, dict)
    print(f"== record stream, {s['mib']} MiB, MiB/s (median) ==")
    print(f"AES-256-GCM on one whole buffer: {s['aesgcm_one_buffer_mib_s']}")
    print(f"SHA-256 on one whole buffer: {s['sha256_mib_s']}")
    print("(enc: 1 MiB reads; enc aligned: reads on chunk boundaries; dec: 256 KiB store blocks)")
    print(
        f"{'plaintext chunk':>16} {'raw GCM chunks':>15} {'enc':>7} {'enc aligned':>12} "
        f"{'dec':>7}"
    )
    for r in s["chunk_sizes"]:
        print(
            f"{r['chunk']:>16} {r['raw_aesgcm_chunks_mib_s']:>15} {r['encrypt_mib_s']:>7} "
            f"{r['encrypt_aligned_reads_mib_s']:>12} {r['decrypt_mib_s']:>7}"
        )
    p = result["pre"]
    assert isinstance(p, dict)
    print("\n== proxy re-encryption, µs per call (median) ==")
    print("(raw: the bare umbral-pre call on parsed objects; checked: from bytes, same checks)")
    print(f"{'op':<40} {'ours':>8} {'raw':>8} {'checked':>8}")
    for r in p["ops"]:
        o, raw, c = (r[k] for k in ("ours_us", "raw_umbral_us", "raw_umbral_same_checks_us"))
        print(
            f"{r['op']:<40} {'-' if o is None else o:>8} {'-' if raw is None else raw:>8} "
            f"{'-' if c is None else c:>8}"
        )
    k = result["rekey"]
    print(
        f"\n== re-key round, cryptography only (grant 2-of-4, 2 nodes serve, requester opens):"
        f" {k['rekey_round_crypto_us'] / 1000:.1f} ms =="
    )
    g = result["signatures"]
    assert isinstance(g, dict)
    print("\n== secp256k1 signatures, µs per call (median) ==")
    print(f"{'':<8} {'pienode (coincurve)':>20} {'ecdsa (pure Python)':>20}")
    for op in ("sign_us", "verify_us"):
        print(f"{op[:-3]:<8} {g[op]['pienode_coincurve']:>20} {g[op]['ecdsa_pure_python']:>20}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="stream size in MiB")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200, help="calls per repetition (small ops)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {
        "stream": bench_stream(args.mib, args.reps),
        "pre": bench_pre(args.reps, args.calls),
        "rekey": bench_rekey_round(args.reps, args.calls),
        "signatures": bench_signatures(args.reps, args.calls),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print_text(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
