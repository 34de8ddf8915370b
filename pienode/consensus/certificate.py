"""Commit certificates: quorum-signed proof that a batch is committed at a sequence number.

Owns: ``CommitCertificate``, its encoding, and ``verify_certificate``, which anyone can
run offline (the ledger stores a certificate with each block; ``pienode verify`` and state
transfer check them). A certificate holds the signatures of COMMIT messages
(Castro-Liskov §4.2): ``quorum`` distinct replicas signed ``(view, seq, digest)``, so at
least f+1 correct replicas prepared it and no other batch can commit at ``seq``.

Different replicas may hold different (equally valid) certificates for one block, so a
block hash must never cover its certificate.

Never: performs I/O; raises on a bad certificate from a peer (verification returns False).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pienode.consensus.config import ReplicaConfig
from pienode.consensus.codec import MAX_SIGNATURE, MessageError
from pienode.consensus.messages import COMMIT, vote_body
from pienode.encoding import pack, unpack
from pienode.errors import EncodingError

Verifier = Callable[[str, bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    view: int
    seq: int
    digest: bytes
    commits: tuple[tuple[str, bytes], ...]  # (replica id, signature over its COMMIT body)


def certificate_fields(cert: CommitCertificate) -> list[Any]:
    return [cert.view, cert.seq, cert.digest, [[r, s] for r, s in cert.commits]]


def certificate_from_fields(obj: Any) -> CommitCertificate:
    """Parse the list form of a certificate.

    Raises:
        MessageError: if ``obj`` is not a well-formed certificate.
    """
    if type(obj) is not list or len(obj) != 4:
        raise MessageError("certificate: expected [view, seq, digest, commits]")
    view, seq, digest, commits = obj
    if type(view) is not int or view < 0 or type(seq) is not int or seq < 0:
        raise MessageError("certificate: bad view or seq")
    if type(digest) is not bytes or len(digest) != 32:
        raise MessageError("certificate: bad digest")
    if type(commits) is not list:
        raise MessageError("certificate: commits must be a list")
    out = []
    for c in commits:
        if (type(c) is not list or len(c) != 2 or type(c[0]) is not str
                or type(c[1]) is not bytes or len(c[1]) > MAX_SIGNATURE):
            raise MessageError("certificate: commit must be [replica, signature]")
        out.append((c[0], c[1]))
    return CommitCertificate(view, seq, digest, tuple(out))


def encode_certificate(cert: CommitCertificate) -> bytes:
    return pack(certificate_fields(cert))


def decode_certificate(data: bytes) -> CommitCertificate:
    """Raises: MessageError for malformed bytes."""
    try:
        obj = unpack(data)
    except EncodingError as exc:
        raise MessageError(f"certificate: {exc.message}") from None
    return certificate_from_fields(obj)


def verify_certificate(
    cert: CommitCertificate, config: ReplicaConfig, verifier: Verifier, digest: bytes
) -> bool:
    """True if ``cert`` proves that the batch with ``digest`` committed at ``cert.seq``.

    Checks: the digest matches, at least ``config.quorum`` distinct members signed, and
    every listed signature verifies (a certificate carrying a bad one is refused whole).
    """
    if cert.digest != digest:
        return False
    members = set(config.node_ids)
    signers = [r for r, _ in cert.commits]
    if len(set(signers)) != len(signers) or not members.issuperset(signers):
        return False
    if len(signers) < config.quorum:
        return False
    for replica, sig in cert.commits:
        if not verifier(replica, vote_body(COMMIT, cert.view, cert.seq, cert.digest, replica), sig):
            return False
    return True
