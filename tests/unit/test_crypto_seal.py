"""Sealing small secrets (kfrags, delegating keys) to one recipient, bound to a context."""

from __future__ import annotations

import os

import pytest

from pienode.crypto import pre, seal
from pienode.crypto.pre import PreSecretKey
from pienode.crypto.seal import SealError
from pienode.errors import CryptoError

CTX = b"kfrag/grant-42/hospital-1"


@pytest.fixture(scope="module")
def keys() -> tuple[PreSecretKey, pre.PrePublicKey]:
    return pre.generate_keypair()


@pytest.mark.parametrize("secret", [b"", b"k", os.urandom(32), os.urandom(310), os.urandom(65536)])
def test_round_trip(keys: tuple[PreSecretKey, pre.PrePublicKey], secret: bytes) -> None:
    sk, pk = keys
    blob = seal.seal(pk, secret, CTX)
    assert blob[0] == seal.SEAL_VERSION
    assert secret == b"" or len(secret) < 8 or secret not in blob
    assert seal.unseal(sk, blob, CTX) == secret


def test_sealing_is_randomised(keys: tuple[PreSecretKey, pre.PrePublicKey]) -> None:
    _, pk = keys
    assert seal.seal(pk, b"same", CTX) != seal.seal(pk, b"same", CTX)


def test_delegating_key_sealed_to_patient_round_trips(
    keys: tuple[PreSecretKey, pre.PrePublicKey],
) -> None:
    patient_sk, patient_pk = keys
    record_sk, record_pk = pre.generate_keypair()
    blob = seal.seal(patient_pk, record_sk.to_bytes(), b"record-key/r1/v1")
    opened = PreSecretKey.from_bytes(seal.unseal(patient_sk, blob, b"record-key/r1/v1"))
    kc, dek = pre.encapsulate(record_pk)
    assert pre.open_original(opened, kc) == dek


def test_wrong_key_fails(keys: tuple[PreSecretKey, pre.PrePublicKey]) -> None:
    _, pk = keys
    blob = seal.seal(pk, b"secret", CTX)
    with pytest.raises(SealError, match="cannot unseal"):
        seal.unseal(PreSecretKey.generate(), blob, CTX)


@pytest.mark.parametrize("other", [b"", b"kfrag/grant-42/hospital-2", CTX + b"\x00", CTX[:-1]])
def test_wrong_context_fails(keys: tuple[PreSecretKey, pre.PrePublicKey], other: bytes) -> None:
    sk, pk = keys
    blob = seal.seal(pk, b"secret", CTX)
    with pytest.raises(SealError, match="different context"):
        seal.unseal(sk, blob, other)


def test_every_byte_tampered_fails(keys: tuple[PreSecretKey, pre.PrePublicKey]) -> None:
    sk, pk = keys
    blob = seal.seal(pk, b"a small secret", CTX)
    for pos in range(len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= 0x20
        with pytest.raises(CryptoError):
            seal.unseal(sk, bytes(bad), CTX)


def test_truncated_or_extended_fails(keys: tuple[PreSecretKey, pre.PrePublicKey]) -> None:
    sk, pk = keys
    blob = seal.seal(pk, b"a small secret", CTX)
    for n in range(len(blob)):
        with pytest.raises(SealError):
            seal.unseal(sk, blob[:n], CTX)
    with pytest.raises(SealError):
        seal.unseal(sk, blob + b"\x00", CTX)


def test_too_large_secret_refused(keys: tuple[PreSecretKey, pre.PrePublicKey]) -> None:
    _, pk = keys
    with pytest.raises(SealError):
        seal.seal(pk, b"x" * (seal.MAX_SECRET_SIZE + 1), CTX)


def test_kfrag_sealed_to_each_node_opens_only_there() -> None:
    nodes = [pre.generate_keypair() for _ in range(4)]
    d_sk, d_pk = pre.generate_keypair()
    signer = PreSecretKey.generate()
    bob_sk, bob_pk = pre.generate_keypair()
    kfrags = pre.generate_kfrags(d_sk, bob_pk, signer, 2, 4)
    sealed = [
        seal.seal(pk, kf, b"kfrag/g1/" + bytes([i]))
        for i, ((_, pk), kf) in enumerate(zip(nodes, kfrags))
    ]
    for i, (sk, _) in enumerate(nodes):
        assert seal.unseal(sk, sealed[i], b"kfrag/g1/" + bytes([i])) == kfrags[i]
        with pytest.raises(SealError):
            seal.unseal(sk, sealed[(i + 1) % 4], b"kfrag/g1/" + bytes([(i + 1) % 4]))
