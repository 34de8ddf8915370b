"""The whole EMR key flow through pienode.crypto.grants: upload, grant, serve, open, rotate."""

from __future__ import annotations

import itertools
import os

import pytest

from pienode.crypto import grants, pre, stream
from pienode.crypto.pre import PrePublicKey, PreSecretKey
from pienode.errors import CryptoError

RECORD = "rec-7"


class Consortium:
    def __init__(self, n: int = 4) -> None:
        self.nodes = [pre.generate_keypair() for _ in range(n)]
        self.node_pks = [pk for _, pk in self.nodes]
        self.patient_sk, self.patient_pk = pre.generate_keypair()
        self.creator_sk, self.creator_pk = pre.generate_keypair()
        self.requester_sk, self.requester_pk = pre.generate_keypair()
        # Kfrag-signing keys of the two parties who may grant.
        self.patient_signer = PreSecretKey.generate()
        self.creator_signer = PreSecretKey.generate()

    def upload(self, version: int) -> tuple[grants.RecordVersionKeys, bytes]:
        return grants.new_record_version([self.patient_pk, self.creator_pk], RECORD, version)

    def serve(
        self,
        keys: grants.RecordVersionKeys,
        sealed: tuple[bytes, ...],
        grant_id: str,
        verifying_pk: PrePublicKey,
        indexes: list[int],
    ) -> list[bytes]:
        return [
            grants.serve_fragment(
                self.nodes[i][0],
                i,
                sealed[i],
                grant_id,
                keys.key_capsule,
                delegating_pk=keys.delegating_pk,
                requester_pk=self.requester_pk,
                verifying_pk=verifying_pk,
            )
            for i in indexes
        ]


@pytest.fixture(scope="module")
def c() -> Consortium:
    return Consortium()


def test_upload_grant_fetch_round_trip(c: Consortium) -> None:
    record = os.urandom(3 * stream.DEFAULT_CHUNK_SIZE + 1234)
    keys, dek = c.upload(1)
    ciphertext = stream.encrypt_bytes(dek, record)
    assert len(keys.sealed_delegating_sk) == 2

    # The patient opens the version's delegating key and grants 2-of-4.
    d_sk = grants.open_record_key(
        c.patient_sk, keys.sealed_delegating_sk[0], RECORD, 1, keys.delegating_pk
    )
    sealed = grants.make_grant(d_sk, c.requester_pk, c.patient_signer, c.node_pks, "g1")
    assert len(sealed) == 4

    # Any two nodes suffice; the requester decrypts the record byte for byte.
    for pair in itertools.combinations(range(4), 2):
        cfrags = c.serve(keys, sealed, "g1", c.patient_signer.public_key, list(pair))
        dek2 = grants.open_grant(
            c.requester_sk,
            keys.delegating_pk,
            keys.key_capsule,
            cfrags,
            c.patient_signer.public_key,
        )
        assert dek2 == dek
    assert stream.decrypt_bytes(dek2, ciphertext) == record

    # One node (t - 1) opens nothing.
    one = c.serve(keys, sealed, "g1", c.patient_signer.public_key, [3])
    with pytest.raises(CryptoError):
        grants.open_grant(
            c.requester_sk, keys.delegating_pk, keys.key_capsule, one, c.patient_signer.public_key
        )


def test_emergency_grant_by_the_creator(c: Consortium) -> None:
    keys, dek = c.upload(1)
    d_sk = grants.open_record_key(
        c.creator_sk, keys.sealed_delegating_sk[1], RECORD, 1, keys.delegating_pk
    )
    sealed = grants.make_grant(d_sk, c.requester_pk, c.creator_signer, c.node_pks, "emergency-1")
    cfrags = c.serve(keys, sealed, "emergency-1", c.creator_signer.public_key, [0, 2])
    assert (
        grants.open_grant(
            c.requester_sk,
            keys.delegating_pk,
            keys.key_capsule,
            cfrags,
            c.creator_signer.public_key,
        )
        == dek
    )
    # Fragments are checked against the signer the chain names: the patient's key here fails.
    with pytest.raises(CryptoError):
        c.serve(keys, sealed, "emergency-1", c.patient_signer.public_key, [1])


def test_sealed_record_key_opens_only_for_its_recipients_and_version(c: Consortium) -> None:
    keys, _ = c.upload(1)
    with pytest.raises(CryptoError):
        grants.open_record_key(
            c.requester_sk, keys.sealed_delegating_sk[0], RECORD, 1, keys.delegating_pk
        )
    with pytest.raises(CryptoError):
        grants.open_record_key(
            c.patient_sk, keys.sealed_delegating_sk[0], RECORD, 2, keys.delegating_pk
        )
    with pytest.raises(CryptoError):
        grants.open_record_key(
            c.patient_sk, keys.sealed_delegating_sk[0], "rec-8", 1, keys.delegating_pk
        )
    other, _ = c.upload(1)
    with pytest.raises(CryptoError, match="does not match"):
        grants.open_record_key(
            c.patient_sk, keys.sealed_delegating_sk[0], RECORD, 1, other.delegating_pk
        )


def test_record_dek_opens_for_its_recipients_only_and_never_from_another_version(c: Consortium) -> None:
    keys, dek = c.upload(1)
    for i, sk in enumerate((c.patient_sk, c.creator_sk)):
        assert grants.open_record_dek(sk, keys.sealed_delegating_sk[i], RECORD, 1, keys.key_capsule) == dek
    sealed = keys.sealed_delegating_sk[0]
    for who, rid, version in ((c.requester_sk, RECORD, 1), (c.patient_sk, RECORD, 2), (c.patient_sk, "rec-8", 1)):
        with pytest.raises(CryptoError):
            grants.open_record_dek(who, sealed, rid, version, keys.key_capsule)
    # A sealed secret of another version (of the same record id and number, so it unseals)
    # does not open this version's key capsule: the capsule's own check refuses it, which
    # is why the download path needs no public-key comparison.
    other, other_dek = c.upload(1)
    assert other_dek != dek
    with pytest.raises(CryptoError, match="cannot open key capsule"):
        grants.open_record_dek(c.patient_sk, other.sealed_delegating_sk[0], RECORD, 1, keys.key_capsule)
    tampered = bytearray(keys.key_capsule)
    tampered[-1] ^= 1
    with pytest.raises(CryptoError):
        grants.open_record_dek(c.patient_sk, sealed, RECORD, 1, bytes(tampered))


def test_sealed_kfrag_serves_only_its_node_and_grant(c: Consortium) -> None:
    keys, _ = c.upload(1)
    d_sk = grants.open_record_key(
        c.patient_sk, keys.sealed_delegating_sk[0], RECORD, 1, keys.delegating_pk
    )
    sealed = grants.make_grant(d_sk, c.requester_pk, c.patient_signer, c.node_pks, "g2")
    kw = {
        "delegating_pk": keys.delegating_pk,
        "requester_pk": c.requester_pk,
        "verifying_pk": c.patient_signer.public_key,
    }
    with pytest.raises(CryptoError):  # node 1 holding node 0's blob
        grants.serve_fragment(c.nodes[1][0], 0, sealed[0], "g2", keys.key_capsule, **kw)
    with pytest.raises(CryptoError):  # right node, another grant id
        grants.serve_fragment(c.nodes[0][0], 0, sealed[0], "g3", keys.key_capsule, **kw)
    with pytest.raises(CryptoError):  # right node, another requester
        grants.serve_fragment(
            c.nodes[0][0], 0, sealed[0], "g2", keys.key_capsule,
            **(kw | {"requester_pk": c.patient_pk}),
        )


def test_rotation_leaves_old_grants_useless(c: Consortium) -> None:
    old, _ = c.upload(1)
    d_sk = grants.open_record_key(
        c.patient_sk, old.sealed_delegating_sk[0], RECORD, 1, old.delegating_pk
    )
    sealed = grants.make_grant(d_sk, c.requester_pk, c.patient_signer, c.node_pks, "g-old")
    new, new_dek = c.upload(2)
    assert new.delegating_pk != old.delegating_pk
    # A node asked to apply the old grant to the new version refuses (the kfrag names the
    # old version's key) ...
    with pytest.raises(CryptoError):
        c.serve(new, sealed, "g-old", c.patient_signer.public_key, [0, 1])
    # ... and even a node that lies about the delegating key produces nothing that opens it.
    mixed = grants.RecordVersionKeys(old.delegating_pk, new.key_capsule, ())
    cfrags = c.serve(mixed, sealed, "g-old", c.patient_signer.public_key, [0, 1])
    for d_pk in (old.delegating_pk, new.delegating_pk):
        with pytest.raises(CryptoError):
            grants.open_grant(
                c.requester_sk, d_pk, new.key_capsule, cfrags, c.patient_signer.public_key
            )


def test_single_node_consortium() -> None:
    solo = Consortium(n=1)
    keys, dek = solo.upload(1)
    d_sk = grants.open_record_key(
        solo.patient_sk, keys.sealed_delegating_sk[0], RECORD, 1, keys.delegating_pk
    )
    sealed = grants.make_grant(d_sk, solo.requester_pk, solo.patient_signer, solo.node_pks, "g")
    cfrags = solo.serve(keys, sealed, "g", solo.patient_signer.public_key, [0])
    got = grants.open_grant(
        solo.requester_sk, keys.delegating_pk, keys.key_capsule, cfrags,
        solo.patient_signer.public_key,
    )
    assert got == dek
