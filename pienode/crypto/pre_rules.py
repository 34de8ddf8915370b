"""Our own rules around proxy re-encryption: sizes, the key capsule's wire format and the
grant threshold. Nothing here touches Umbral.

``pienode.crypto.pre`` is the one module that imports ``umbral_pre`` and applies these rules
to what Umbral makes; this module must never import it, so what we decide (and put on chain)
stays ours and testable whatever happens to the library. It holds no keys and never logs.

Key capsule (what goes on chain for a record version: the Umbral capsule plus the DEK
encrypted under it by Umbral's own DEM, XChaCha20-Poly1305)::

    0x01 (version) || capsule length (u16 BE) || Umbral capsule || encrypted DEK

Grant threshold: one whole (1-of-1) kfrag plus the delegatee's secret key reveals the
delegating secret key (DESIGN.md, issue 6). So grants are threshold grants with 2 <= t
(t = f+1 of the n = 3f+1 hospitals, at least 2 whenever n >= 2), and every record version
has its own delegating key, which limits what any collusion of t can learn.
"""

from __future__ import annotations

import struct

from pienode.errors import CryptoError

DEK_SIZE = 32
SECRET_KEY_SIZE = 32
PUBLIC_KEY_SIZE = 33
KEY_CAPSULE_VERSION = 1
#: Upper bound on fragments in one grant (one per hospital node; far above any consortium).
MAX_SHARES = 255

_LEN = struct.Struct(">H")


class PreError(CryptoError):
    """A proxy re-encryption key, capsule or fragment that does not check out."""


# --- key capsules -------------------------------------------------------------------------


def pack_key_capsule(capsule: bytes, ciphertext: bytes) -> bytes:
    """Join a serialised Umbral capsule and the encrypted DEK into a key capsule."""
    return bytes([KEY_CAPSULE_VERSION]) + _LEN.pack(len(capsule)) + capsule + ciphertext


def split_key_capsule(key_capsule: bytes) -> tuple[bytes, bytes]:
    """Split a key capsule into (Umbral capsule bytes, encrypted DEK).

    Raises:
        PreError: wrong version or length.
    """
    data = bytes(key_capsule)
    if len(data) < 1 + _LEN.size or data[0] != KEY_CAPSULE_VERSION:
        raise PreError("unsupported or truncated key capsule")
    (n,) = _LEN.unpack_from(data, 1)
    start = 1 + _LEN.size
    if len(data) < start + n + 1:
        raise PreError("truncated key capsule")
    return data[start : start + n], data[start + n :]


def looks_like_key_capsule(data: bytes) -> bool:
    """Whether ``data`` starts as a key capsule does (rather than as a bare Umbral capsule)."""
    return data[:1] == bytes([KEY_CAPSULE_VERSION])


def check_dek(dek: bytes | None) -> bytes:
    """Raises: PreError: what a key capsule opened to is not a 32-byte key."""
    if dek is None or len(dek) != DEK_SIZE:
        raise PreError("key capsule does not hold a 32-byte key")
    return dek


# --- grant thresholds ---------------------------------------------------------------------


def grant_threshold(shares: int) -> int:
    """The threshold for a grant split over ``shares`` hospital nodes.

    t = f + 1 with n = 3f + 1 tolerates f nodes down and needs more than f of them to
    collude; never 1 when there are two or more nodes, because a 1-of-n fragment is a whole
    re-encryption key (the trap in the module docstring).
    """
    if not 1 <= shares <= MAX_SHARES:
        raise PreError(f"shares must be in [1, {MAX_SHARES}]")
    f = (shares - 1) // 3
    return max(f + 1, min(2, shares))


def check_threshold(threshold: int, shares: int) -> None:
    """Raises: PreError: ``threshold`` outside [2, shares] (1 only for a single node), or
    ``shares`` outside [1, MAX_SHARES]."""
    if not 1 <= shares <= MAX_SHARES:
        raise PreError(f"shares must be in [1, {MAX_SHARES}]", shares=shares)
    if not 1 <= threshold <= shares:
        raise PreError("threshold must be in [1, shares]", threshold=threshold, shares=shares)
    if threshold == 1 and shares > 1:
        raise PreError(
            "a 1-of-n grant gives every node a whole re-encryption key; use threshold >= 2",
            threshold=threshold,
            shares=shares,
        )
