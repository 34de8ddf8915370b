"""Cross-check pienode.crypto.keys (libsecp256k1) against the independent pure-Python ecdsa.

Both must agree on exactly what is signed: SHA-256 over ``signing_payload(domain, payload)``,
a 64-byte r || s signature, low S.
"""

from __future__ import annotations

import hashlib

import pytest
from ecdsa import SECP256k1, BadSignatureError, SigningKey, VerifyingKey
from ecdsa.util import sigdecode_string, sigencode_string
from hypothesis import given, settings
from hypothesis import strategies as st

from pienode.crypto.keys import PrivateKey, PublicKey
from pienode.encoding import signing_payload

ORDER = SECP256k1.order
DOMAIN = "tx"


def ecdsa_verify(pub: PublicKey, domain: str, payload: bytes, sig: bytes) -> bool:
    vk = VerifyingKey.from_string(pub.data, curve=SECP256k1)
    try:
        return bool(
            vk.verify(
                sig,
                signing_payload(domain, payload),
                hashfunc=hashlib.sha256,
                sigdecode=sigdecode_string,
            )
        )
    except BadSignatureError:
        return False


def ecdsa_sign(secret: bytes, domain: str, payload: bytes, *, low_s: bool = True) -> bytes:
    sk = SigningKey.from_string(secret, curve=SECP256k1)
    sig = sk.sign(
        signing_payload(domain, payload), hashfunc=hashlib.sha256, sigencode=sigencode_string
    )
    r, s = sigdecode_string(sig, ORDER)
    if low_s and s > ORDER // 2:
        s = ORDER - s
    if not low_s and s <= ORDER // 2:
        s = ORDER - s
    return bytes(sigencode_string(r, s, ORDER))


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


def test_public_keys_agree(key: PrivateKey) -> None:
    sk = SigningKey.from_string(key.to_bytes(), curve=SECP256k1)
    assert sk.get_verifying_key().to_string("compressed") == key.public_key.data


@settings(max_examples=10, deadline=None)
@given(payload=st.binary(max_size=300))
def test_our_signature_verifies_with_ecdsa(key: PrivateKey, payload: bytes) -> None:
    sig = key.sign(DOMAIN, payload)
    assert len(sig) == 64
    r, s = sigdecode_string(sig, ORDER)
    assert 0 < s <= ORDER // 2  # low S
    assert ecdsa_verify(key.public_key, DOMAIN, payload, sig)
    assert not ecdsa_verify(key.public_key, "vote", payload, sig)
    assert not ecdsa_verify(key.public_key, DOMAIN, payload + b"\x00", sig)


@settings(max_examples=10, deadline=None)
@given(payload=st.binary(max_size=300))
def test_ecdsa_signature_verifies_with_ours(key: PrivateKey, payload: bytes) -> None:
    sig = ecdsa_sign(key.to_bytes(), DOMAIN, payload)
    assert key.public_key.verify(DOMAIN, payload, sig)
    assert not key.public_key.verify("vote", payload, sig)
    assert not PrivateKey.generate().public_key.verify(DOMAIN, payload, sig)


def test_high_s_twin_is_refused_by_ours_but_valid_ecdsa(key: PrivateKey) -> None:
    # The mirror signature (r, n - s) is mathematically valid; refusing it stops anyone from
    # mutating a transaction's signature (and so its id) without the key.
    high = ecdsa_sign(key.to_bytes(), DOMAIN, b"payload", low_s=False)
    assert ecdsa_verify(key.public_key, DOMAIN, b"payload", high)
    assert not key.public_key.verify(DOMAIN, b"payload", high)


def test_payload_is_domain_separated_as_documented() -> None:
    assert signing_payload(DOMAIN, b"abc") == b"pie/tx\x00abc"
