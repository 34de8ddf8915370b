"""Proxy re-encryption of record keys: Umbral (threshold, unidirectional) via ``umbral-pre``.

This is the ONLY module that imports ``umbral_pre``: ``umbral-pre`` 0.11 ships binary wheels
up to CPython 3.11, so if the supported Python moves, this file is the one place to change.
Our own rules around it (sizes, the key capsule format, the grant threshold) live in
``pienode.crypto.pre_rules``, which never touches Umbral. This module must never log, store or return a secret except to its caller, and never hand anything
unverified to Umbral's combine step (every kfrag and cfrag is verified first).

Vocabulary (the design paper's, Umbral's in brackets):
- a record version's *delegating* key pair: fresh per record version, never the patient's
  long-term key. Its secret is sealed (``pienode.crypto.seal``) to the patient and to the
  creating physician.
- *key capsule*: what goes on chain for a record version: the Umbral capsule plus the
  dedicated key (DEK) encrypted under it (Umbral's own DEM, XChaCha20-Poly1305); format in
  ``pienode.crypto.pre_rules``.
- *re-encryption key fragments* [kfrags]: a grant, t-of-n, one sealed to each hospital node.
- *capsule fragments* [cfrags]: what a node returns to the requester for the key capsule.

The trap this layout avoids (DESIGN.md, issue 6): one whole (1-of-1) kfrag plus the
delegatee's secret key reveals the delegating secret key. So grants are threshold grants
(``pre_rules.grant_threshold``) and every record version has its own delegating key.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import umbral_pre as _u

from pienode.crypto.pre_rules import (
    DEK_SIZE,
    PUBLIC_KEY_SIZE,
    SECRET_KEY_SIZE,
    PreError,
    check_dek,
    check_threshold,
    looks_like_key_capsule,
    pack_key_capsule,
    split_key_capsule,
)

# Exported by umbral-pre at run time but missing from its type stubs.
_VerificationError: type[Exception] = getattr(_u, "VerificationError")


@contextmanager
def _umbral(what: str) -> Iterator[None]:
    """Turn any umbral-pre failure into a ``PreError`` saying what we were doing."""
    try:
        yield
    except PreError:
        raise
    except _VerificationError as exc:
        raise PreError(f"{what}: verification failed ({exc})") from None
    except (ValueError, TypeError) as exc:
        raise PreError(f"{what}: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _parse_pk(data: bytes) -> _u.PublicKey:
    with _umbral("invalid PRE public key"):
        pk = _u.PublicKey.from_compressed_bytes(data)
    # umbral-pre accepts any tag byte and normalises it; two encodings of one key would let
    # the same key look different on chain, so only the canonical one is accepted.
    if pk.to_compressed_bytes() != data:
        raise PreError("PRE public key is not in canonical compressed form")
    return pk


@dataclass(frozen=True, slots=True)
class PrePublicKey:
    """A compressed secp256k1 point (33 bytes) used by Umbral."""

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or len(self.data) != PUBLIC_KEY_SIZE:
            raise PreError("PRE public key must be 33 compressed bytes")

    @classmethod
    def from_bytes(cls, data: bytes) -> "PrePublicKey":
        """Parse and check that the point is on the curve.

        Raises:
            PreError: not a valid compressed secp256k1 point.
        """
        pk = cls(bytes(data))
        _parse_pk(pk.data)
        return pk

    def to_bytes(self) -> bytes:
        return self.data

    def hex(self) -> str:
        return self.data.hex()

    @property
    def umbral(self) -> _u.PublicKey:
        return _parse_pk(self.data)


class PreSecretKey:
    """A secp256k1 scalar used by Umbral. Not a dataclass: never printed or compared.

    The same 32 bytes as a ``pienode.crypto.keys.PrivateKey`` give the same public key, but
    keep signing keys and PRE keys apart unless there is a reason not to.
    """

    __slots__ = ("_sk", "_pk")

    def __init__(self, sk: _u.SecretKey) -> None:
        self._sk = sk
        # Deriving the public key costs ~120 µs in umbral-pre; do it once.
        self._pk: PrePublicKey | None = None

    @classmethod
    def generate(cls) -> "PreSecretKey":
        return cls(_u.SecretKey.random())

    @classmethod
    def from_bytes(cls, secret: bytes) -> "PreSecretKey":
        """Raises: PreError: not 32 bytes, or zero / not below the group order."""
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_KEY_SIZE:
            raise PreError("PRE secret key must be 32 bytes")
        with _umbral("invalid PRE secret key"):
            return cls(_u.SecretKey.from_be_bytes(bytes(secret)))

    def to_bytes(self) -> bytes:
        return self._sk.to_be_bytes()

    @property
    def public_key(self) -> PrePublicKey:
        if self._pk is None:
            self._pk = PrePublicKey(self._sk.public_key().to_compressed_bytes())
        return self._pk

    @property
    def umbral(self) -> _u.SecretKey:
        return self._sk

    def __repr__(self) -> str:
        return f"PreSecretKey(public={self.public_key.hex()[:16]}...)"


def generate_keypair() -> tuple[PreSecretKey, PrePublicKey]:
    sk = PreSecretKey.generate()
    return sk, sk.public_key


# --- key capsules -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _parse_capsule(raw: bytes) -> _u.Capsule:
    # Parsing checks the capsule's proof (~350 µs); a node re-encrypts one record's capsule
    # for every requester, so parsed capsules (immutable) are kept.
    with _umbral("invalid capsule"):
        return _u.Capsule.from_bytes(raw)


def _parse_key_capsule(key_capsule: bytes) -> tuple[_u.Capsule, bytes]:
    raw, ciphertext = split_key_capsule(key_capsule)
    return _parse_capsule(raw), ciphertext


def encapsulate(delegating_pk: PrePublicKey) -> tuple[bytes, bytes]:
    """Make a fresh random DEK and its key capsule under a record version's delegating key.

    Returns:
        (key_capsule, dek): the key capsule (goes on chain) and the 32-byte DEK (stays in
        the client that encrypts the record).
    """
    dek = os.urandom(DEK_SIZE)
    with _umbral("encapsulate"):
        capsule, ciphertext = _u.encrypt(delegating_pk.umbral, dek)
    return pack_key_capsule(bytes(capsule), ciphertext), dek


def open_original(delegating_sk: PreSecretKey, key_capsule: bytes) -> bytes:
    """Recover the DEK with the record version's delegating secret (patient, creator).

    Raises:
        PreError: wrong key, or a tampered or malformed key capsule.
    """
    capsule, ciphertext = _parse_key_capsule(key_capsule)
    with _umbral("cannot open key capsule (wrong key or tampered capsule)"):
        return check_dek(_u.decrypt_original(delegating_sk.umbral, capsule, ciphertext))


def encrypt_small(recipient_pk: PrePublicKey, plaintext: bytes) -> tuple[bytes, bytes]:
    """Umbral's public-key encryption of a small plaintext, for ``pienode.crypto.seal``.

    Returns:
        (capsule bytes, ciphertext).
    """
    with _umbral("encrypt"):
        capsule, ciphertext = _u.encrypt(recipient_pk.umbral, bytes(plaintext))
    return bytes(capsule), ciphertext


def decrypt_small(recipient_sk: PreSecretKey, capsule: bytes, ciphertext: bytes) -> bytes:
    """Inverse of ``encrypt_small``.

    Raises:
        PreError: malformed capsule, wrong key, or tampered ciphertext.
    """
    parsed = _parse_capsule(bytes(capsule))
    with _umbral("cannot decrypt (wrong key or tampered ciphertext)"):
        return _u.decrypt_original(recipient_sk.umbral, parsed, bytes(ciphertext))


# --- grants: kfrags, cfrags ---------------------------------------------------------------


def generate_kfrags(
    delegating_sk: PreSecretKey,
    receiving_pk: PrePublicKey,
    signer: PreSecretKey,
    threshold: int,
    shares: int,
) -> list[bytes]:
    """Split a re-encryption key from ``delegating_sk`` to ``receiving_pk`` into fragments.

    Each fragment is signed by ``signer`` over both the delegating and the receiving key, so
    a node can check it was made for exactly this record version and this requester.

    Returns:
        ``shares`` serialised kfrags; seal one to each node (``pienode.crypto.seal``).

    Raises:
        PreError: threshold outside [2, shares] (1 only for a single node), or an Umbral
            failure.
    """
    check_threshold(threshold, shares)
    with _umbral("generate_kfrags"):
        kfrags = _u.generate_kfrags(
            delegating_sk.umbral,
            receiving_pk.umbral,
            _u.Signer(signer.umbral),
            threshold,
            shares,
            True,
            True,
        )
        return [bytes(k) for k in kfrags]


def _verified_kfrag(
    kfrag: bytes,
    delegating_pk: PrePublicKey,
    receiving_pk: PrePublicKey,
    verifying_pk: PrePublicKey,
) -> _u.VerifiedKeyFrag:
    with _umbral("invalid kfrag"):
        parsed = _u.KeyFrag.from_bytes(bytes(kfrag))
    with _umbral("kfrag does not match this grant (signer, record key or requester)"):
        return parsed.verify(verifying_pk.umbral, delegating_pk.umbral, receiving_pk.umbral)


def verify_kfrag(
    kfrag: bytes,
    *,
    delegating_pk: PrePublicKey,
    receiving_pk: PrePublicKey,
    verifying_pk: PrePublicKey,
) -> None:
    """Check a kfrag before a node accepts and stores it.

    Raises:
        PreError: malformed, or not signed by ``verifying_pk`` for exactly this delegating
            and receiving key.
    """
    _verified_kfrag(kfrag, delegating_pk, receiving_pk, verifying_pk)


def reencrypt(
    key_capsule: bytes,
    kfrag: bytes,
    *,
    delegating_pk: PrePublicKey,
    receiving_pk: PrePublicKey,
    verifying_pk: PrePublicKey,
) -> bytes:
    """Node side: turn the key capsule into a capsule fragment for the grant's requester.

    ``key_capsule`` may be the whole key capsule or the bare Umbral capsule bytes. The kfrag
    is verified against the three keys first, so a node never serves a fragment for another
    record or another requester.

    Raises:
        PreError: a malformed capsule or kfrag, or a kfrag made for other keys.
    """
    capsule = _parse_capsule_any(key_capsule)
    verified = _verified_kfrag(kfrag, delegating_pk, receiving_pk, verifying_pk)
    with _umbral("reencrypt"):
        return bytes(_u.reencrypt(capsule, verified))


def _parse_capsule_any(key_capsule: bytes) -> _u.Capsule:
    data = bytes(key_capsule)
    if looks_like_key_capsule(data):
        return _parse_key_capsule(data)[0]
    return _parse_capsule(data)


def open_reencrypted(
    receiving_sk: PreSecretKey,
    delegating_pk: PrePublicKey,
    key_capsule: bytes,
    cfrags: Sequence[bytes],
    *,
    verifying_pk: PrePublicKey,
) -> bytes:
    """Requester side: verify capsule fragments, combine them, and recover the DEK.

    Duplicate fragments are ignored; any fragment that fails verification makes the whole
    call fail (a node that serves a bad fragment is misbehaving and should be reported, not
    silently skipped; callers wanting to skip it can verify each with ``verify_cfrag``).

    Raises:
        PreError: a fragment that does not verify (another capsule, another requester,
            another signer), or fewer than the grant's threshold of distinct fragments.
    """
    capsule, ciphertext = _parse_key_capsule(key_capsule)
    receiving_pk = receiving_sk.public_key
    unique = list(dict.fromkeys(bytes(c) for c in cfrags))
    if not unique:
        raise PreError("no capsule fragments")
    verified = [
        _verified_cfrag(c, capsule, delegating_pk, receiving_pk, verifying_pk) for c in unique
    ]
    with _umbral(
        f"cannot open key capsule with {len(verified)} fragment(s) "
        "(fewer than the threshold, or fragments of different grants)"
    ):
        dek = _u.decrypt_reencrypted(
            receiving_sk.umbral, delegating_pk.umbral, capsule, verified, ciphertext
        )
    return check_dek(dek)


def _verified_cfrag(
    cfrag: bytes,
    capsule: _u.Capsule,
    delegating_pk: PrePublicKey,
    receiving_pk: PrePublicKey,
    verifying_pk: PrePublicKey,
) -> _u.VerifiedCapsuleFrag:
    with _umbral("invalid cfrag"):
        parsed = _u.CapsuleFrag.from_bytes(bytes(cfrag))
    with _umbral("cfrag does not match this capsule, requester or signer"):
        return parsed.verify(
            capsule, verifying_pk.umbral, delegating_pk.umbral, receiving_pk.umbral
        )


def verify_cfrag(
    cfrag: bytes,
    key_capsule: bytes,
    *,
    delegating_pk: PrePublicKey,
    receiving_pk: PrePublicKey,
    verifying_pk: PrePublicKey,
) -> None:
    """Check one capsule fragment (e.g. to skip a misbehaving node and ask another).

    Raises:
        PreError: malformed, or not a correct re-encryption of this capsule for this grant.
    """
    _verified_cfrag(
        cfrag, _parse_capsule_any(key_capsule), delegating_pk, receiving_pk, verifying_pk
    )
