"""Commit certificates with real secp256k1 keys: what verifies and what must not."""

from __future__ import annotations

import pytest

from pienode.consensus import messages as m
from pienode.consensus.codec import MessageError
from pienode.consensus.certificate import (
    CommitCertificate, decode_certificate, encode_certificate, verify_certificate,
)
from pienode.consensus.config import ReplicaConfig
from pienode.crypto.keys import PrivateKey
from pienode.encoding import sha256

IDS = ("hospital-1", "hospital-2", "hospital-3", "hospital-4")
KEYS = {i: PrivateKey.generate() for i in IDS}
PUBS = {i: k.public_key for i, k in KEYS.items()}
CFG = ReplicaConfig(node_ids=IDS)
D = sha256(b"batch")


def verifier(node_id: str, payload: bytes, sig: bytes) -> bool:
    pub = PUBS.get(node_id)
    return pub is not None and pub.verify("pbft", payload, sig)


def commit_sig(node: str, view: int, seq: int, digest: bytes) -> bytes:
    return m.make_commit(view, seq, digest, node, lambda b: KEYS[node].sign("pbft", b)).signature


def cert(signers, view=2, seq=9, digest=D) -> CommitCertificate:
    return CommitCertificate(view, seq, digest,
                             tuple((s, commit_sig(s, view, seq, digest)) for s in signers))


def test_quorum_of_real_signatures_verifies() -> None:
    c = cert(IDS[:3])
    assert verify_certificate(c, CFG, verifier, D)
    assert verify_certificate(cert(IDS), CFG, verifier, D)


def test_round_trip() -> None:
    c = cert(IDS[1:])
    assert decode_certificate(encode_certificate(c)) == c
    with pytest.raises(MessageError):
        decode_certificate(b"\x93\x01\x02\x03")


@pytest.mark.parametrize("case", ["too_few", "duplicate", "stranger", "wrong_digest", "bad_sig",
                                  "other_seq", "other_view"])
def test_invalid_certificates_are_refused(case: str) -> None:
    c = cert(IDS[:3])
    if case == "too_few":
        c = cert(IDS[:2])
    elif case == "duplicate":
        c = CommitCertificate(c.view, c.seq, c.digest, c.commits[:2] + (c.commits[0],))
    elif case == "stranger":
        stranger = PrivateKey.generate()
        sig = m.make_commit(2, 9, D, "mallory", lambda b: stranger.sign("pbft", b)).signature
        c = CommitCertificate(2, 9, D, c.commits[:2] + (("mallory", sig),))
    elif case == "wrong_digest":
        assert not verify_certificate(c, CFG, verifier, sha256(b"other"))
        return
    elif case == "bad_sig":
        c = CommitCertificate(2, 9, D, c.commits[:2] + ((IDS[2], bytes(64)),))
    elif case == "other_seq":
        c = CommitCertificate(2, 10, D, c.commits)
    elif case == "other_view":
        c = CommitCertificate(3, 9, D, c.commits)
    assert not verify_certificate(c, CFG, verifier, D)


def test_signature_in_another_domain_is_refused() -> None:
    body = m.vote_body(m.COMMIT, 2, 9, D, IDS[0])
    forged = ((IDS[0], KEYS[IDS[0]].sign("tx", body)),) + cert(IDS[1:3]).commits
    assert not verify_certificate(CommitCertificate(2, 9, D, forged), CFG, verifier, D)


def test_quorum_for_sizes_other_than_3f_plus_1() -> None:
    assert [ReplicaConfig(node_ids=tuple(map(str, range(n)))).quorum for n in (1, 4, 5, 6, 7)] \
        == [1, 3, 4, 4, 5]
