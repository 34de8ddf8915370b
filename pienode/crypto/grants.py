"""The EMR key flow in five calls, so every party seals and opens with the same contexts.

Issue 6, item 4 (design paper Algorithms 1 and 2, done safely):

1. ``new_record_version`` (creating physician's client): a fresh delegating key pair for this
   record version, a fresh DEK in a key capsule under it, and the delegating secret sealed
   to the patient and to the creator (for emergency access). The DEK encrypts the record
   (``pienode.crypto.stream``); the key capsule, the delegating public key and the sealed
   secrets go in the upload transaction; the DEK and the secret never leave the client.
2. ``open_record_key`` (patient, or creator in an emergency): unseal the delegating secret;
   ``open_record_dek`` when only the DEK is wanted (a download).
3. ``make_grant`` (patient's client): t-of-n kfrags for the requester, one sealed to each
   hospital node, bound to the grant id; they go in the grant transaction.
4. ``serve_fragment`` (each node, only while the chain shows the grant valid): unseal its
   kfrag, check it against the record's and requester's keys, re-encrypt the key capsule.
5. ``open_grant`` (requester's client): combine t capsule fragments into the DEK.

This module holds no state and never logs; whatever it returns that is secret (a DEK, a
``PreSecretKey``) stays with the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pienode.crypto import pre, pre_rules, seal
from pienode.crypto.pre import PrePublicKey, PreSecretKey


@dataclass(frozen=True, slots=True)
class RecordVersionKeys:
    """The public part of a new record version's keys (all of it may go on chain)."""

    delegating_pk: PrePublicKey
    key_capsule: bytes
    #: The delegating secret sealed to each recipient, in the order they were given.
    sealed_delegating_sk: tuple[bytes, ...]


def record_key_context(record_id: str, version: int) -> bytes:
    return f"pie/record-key/{record_id}/{version}".encode()


def kfrag_context(grant_id: str, node_index: int) -> bytes:
    return f"pie/kfrag/{grant_id}/{node_index}".encode()


def new_record_version(
    recipients: Sequence[PrePublicKey], record_id: str, version: int
) -> tuple[RecordVersionKeys, bytes]:
    """Create a record version's delegating key, DEK and key capsule.

    Args:
        recipients: who may open the delegating secret (the patient, the creating physician).

    Returns:
        (the public keys and sealed secrets, the DEK to encrypt the record with).
    """
    delegating_sk, delegating_pk = pre.generate_keypair()
    key_capsule, dek = pre.encapsulate(delegating_pk)
    context = record_key_context(record_id, version)
    secret = delegating_sk.to_bytes()
    sealed = tuple(seal.seal(pk, secret, context) for pk in recipients)
    return RecordVersionKeys(delegating_pk, key_capsule, sealed), dek


def open_record_key(
    recipient_sk: PreSecretKey,
    sealed_delegating_sk: bytes,
    record_id: str,
    version: int,
    delegating_pk: PrePublicKey,
) -> PreSecretKey:
    """Unseal a record version's delegating secret and check it matches the chain's key.

    Raises:
        CryptoError: not sealed to this key, for another record version, or a secret
            that does not belong to ``delegating_pk``.
    """
    secret = seal.unseal(recipient_sk, sealed_delegating_sk, record_key_context(record_id, version))
    sk = PreSecretKey.from_bytes(secret)
    if sk.public_key != delegating_pk:
        raise pre.PreError("sealed delegating key does not match the record version's key")
    return sk


def open_record_dek(
    recipient_sk: PreSecretKey,
    sealed_delegating_sk: bytes,
    record_id: str,
    version: int,
    key_capsule: bytes,
) -> bytes:
    """The DEK of a record version whose delegating secret is sealed to me (a download).

    Unlike ``open_record_key``, the unsealed secret is not compared with the record's
    delegating public key (deriving that key costs a scalar multiplication, ~0.12 ms,
    on every download), because for the DEK the comparison proves nothing more: the key
    capsule opens only under the secret it was made for (Umbral's DEM authenticates it,
    so a wrong secret fails here), and whoever could hand me a sealed secret that does not
    match the record's public key (anyone can seal to my key) could as well hand me a
    record whose public key matches it: the record itself is what must be trusted, and
    the ciphertext is then checked against the record's CID and every chunk against this
    DEK. The comparison stays wherever the secret itself is used (``open_record_key``:
    grants and re-keying, where a mismatch would make kfrags for another key).

    Raises:
        CryptoError: not sealed to this key or for another record version, or a key
            capsule that this secret does not open (wrong key, tampered capsule).
    """
    secret = seal.unseal(recipient_sk, sealed_delegating_sk, record_key_context(record_id, version))
    return pre.open_original(PreSecretKey.from_bytes(secret), key_capsule)


def make_grant(
    delegating_sk: PreSecretKey,
    requester_pk: PrePublicKey,
    signer: PreSecretKey,
    node_pks: Sequence[PrePublicKey],
    grant_id: str,
    threshold: int | None = None,
) -> tuple[bytes, ...]:
    """Split a grant for ``requester_pk`` over the hospital nodes.

    Args:
        signer: the grantor's kfrag-signing key; nodes and the requester check fragments
            against its public key (``verifying_pk`` below).
        node_pks: each hospital node's PRE public key, in a fixed (genesis) order.
        threshold: defaults to ``pre_rules.grant_threshold(len(node_pks))`` (f + 1, at least 2).

    Returns:
        One sealed kfrag per node, in ``node_pks`` order.
    """
    t = pre_rules.grant_threshold(len(node_pks)) if threshold is None else threshold
    kfrags = pre.generate_kfrags(delegating_sk, requester_pk, signer, t, len(node_pks))
    return tuple(
        seal.seal(pk, kfrag, kfrag_context(grant_id, i))
        for i, (pk, kfrag) in enumerate(zip(node_pks, kfrags))
    )


def serve_fragment(
    node_sk: PreSecretKey,
    node_index: int,
    sealed_kfrag: bytes,
    grant_id: str,
    key_capsule: bytes,
    *,
    delegating_pk: PrePublicKey,
    requester_pk: PrePublicKey,
    verifying_pk: PrePublicKey,
) -> bytes:
    """Node side: the capsule fragment for one grant. The caller checks the grant is valid.

    Raises:
        CryptoError: the kfrag is not sealed to this node for this grant, or was not made
            by ``verifying_pk`` for this record version and requester.
    """
    kfrag = seal.unseal(node_sk, sealed_kfrag, kfrag_context(grant_id, node_index))
    return pre.reencrypt(
        key_capsule,
        kfrag,
        delegating_pk=delegating_pk,
        receiving_pk=requester_pk,
        verifying_pk=verifying_pk,
    )


def open_grant(
    requester_sk: PreSecretKey,
    delegating_pk: PrePublicKey,
    key_capsule: bytes,
    cfrags: Sequence[bytes],
    verifying_pk: PrePublicKey,
) -> bytes:
    """Requester side: t capsule fragments (from any t nodes) to the DEK.

    Raises:
        CryptoError: too few fragments, or any fragment that does not verify.
    """
    return pre.open_reencrypted(
        requester_sk, delegating_pk, key_capsule, cfrags, verifying_pk=verifying_pk
    )
