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


def _coincurve_der_route(pub: PublicKey, domain: str, payload: bytes, sig: bytes) -> bool:
    """The verification ``PublicKey.verify`` used before its direct libsecp256k1 call."""
    import coincurve
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    try:
        der = cdata_to_der(deserialize_compact(sig))
        return coincurve.PublicKey(pub.data).verify(der, signing_payload(domain, payload),
                                                    hasher=lambda m: hashlib.sha256(m).digest())
    except Exception:
        return False


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=200), flip=st.integers(min_value=0, max_value=63))
def test_direct_verify_agrees_with_the_der_route(key: PrivateKey, payload: bytes, flip: int) -> None:
    sig = key.sign(DOMAIN, payload)
    bad = bytearray(sig)
    bad[flip] ^= 0x01
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    cases = [
        sig, bytes(bad),
        sig[:32] + (ORDER - s).to_bytes(32, "big"),    # high-S twin
        ORDER.to_bytes(32, "big") + sig[32:],          # r out of range
        sig[:32] + ORDER.to_bytes(32, "big"),          # s out of range
        bytes(32) + sig[32:], sig[:32] + bytes(32),    # zero r, zero s
    ]
    for case in cases:
        want = _coincurve_der_route(key.public_key, DOMAIN, payload, case)
        assert key.public_key.verify(DOMAIN, payload, case) == want
    assert key.public_key.verify(DOMAIN, payload, sig) and r > 0
    assert not key.public_key.verify(DOMAIN, payload, cases[2])
    assert not key.public_key.verify("vote", payload, sig)
    assert not key.public_key.verify(DOMAIN, payload, sig[:63])
