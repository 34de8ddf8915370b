"""Sealing small secrets to one recipient's PRE public key (ECIES-like, via Umbral).

Used for: a grant's kfrag sealed to each hospital node, and a record version's delegating
secret sealed to the patient (and to the creating physician, for emergency access). Only the
holder of the recipient's secret key opens a sealed blob, and a changed blob does not open.
Sealing does not say who sealed (anyone can seal to a public key): the signed transaction
that carries a blob says that, and the opener checks what it got (a kfrag's signature, a
delegating secret against the record version's public key; see ``pienode.crypto.grants``).

This module never logs or stores what it seals, and never implements its own public-key
encryption: it reuses Umbral's ``encrypt``/``decrypt_original`` (ECDH on secp256k1 into a
capsule, then XChaCha20-Poly1305 with the capsule as associated data) through
``pienode.crypto.pre``'s keys. Umbral's API takes no associated data, so the context is bound
inside the plaintext: ``SHA-256(DOMAIN || context) || secret``, checked on open. A blob
sealed for one purpose (``b"kfrag/" + grant id``) therefore never opens as another.

Format::

    0x01 (version) || capsule length (u16 BE) || Umbral capsule || Umbral ciphertext
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from pienode.crypto import pre
from pienode.crypto.pre import PrePublicKey, PreSecretKey
from pienode.errors import CryptoError

SEAL_VERSION = 1
MAX_SECRET_SIZE = 64 * 1024
_DOMAIN = b"pie/seal/v1\x00"
_LEN = struct.Struct(">H")
_BIND = 32


class SealError(CryptoError):
    """A sealed blob that is malformed, tampered with, or not for this key or context."""


def _binding(context: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + bytes(context)).digest()


def seal(recipient_pk: PrePublicKey, secret: bytes, context: bytes) -> bytes:
    """Encrypt ``secret`` so only the holder of ``recipient_pk``'s secret opens it.

    Args:
        recipient_pk: the recipient's PRE public key.
        secret: at most 64 KiB.
        context: what the secret is for (e.g. ``b"kfrag/" + grant_id``); must match on open.

    Raises:
        SealError: secret too large.
    """
    if len(secret) > MAX_SECRET_SIZE:
        raise SealError("secret too large to seal", size=len(secret))
    raw, ciphertext = pre.encrypt_small(recipient_pk, _binding(context) + bytes(secret))
    return bytes([SEAL_VERSION]) + _LEN.pack(len(raw)) + raw + ciphertext


def unseal(recipient_sk: PreSecretKey, blob: bytes, context: bytes) -> bytes:
    """Open a blob made by ``seal``.

    Raises:
        SealError: malformed or tampered blob, wrong key, or a different context.
    """
    data = bytes(blob)
    if len(data) < 1 + _LEN.size or data[0] != SEAL_VERSION:
        raise SealError("unsupported or truncated sealed blob")
    (n,) = _LEN.unpack_from(data, 1)
    start = 1 + _LEN.size
    if len(data) <= start + n:
        raise SealError("truncated sealed blob")
    try:
        plaintext = pre.decrypt_small(recipient_sk, data[start : start + n], data[start + n :])
    except CryptoError as exc:
        raise SealError(f"cannot unseal: {exc.message}") from None
    if len(plaintext) < _BIND or not hmac.compare_digest(plaintext[:_BIND], _binding(context)):
        raise SealError("sealed blob is for a different context")
    return plaintext[_BIND:]
