"""PBFT wire codec: round trips of every message, strict rejection of anything else."""

from __future__ import annotations

import hashlib
import hmac

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pienode.consensus import messages as m
from pienode.consensus.codec import MessageError
from pienode.consensus.decoding import decode_message
from pienode.consensus.certificate import CommitCertificate, certificate_fields
from pienode.consensus.config import ReplicaConfig
from pienode.consensus.replica import Replica
from pienode.encoding import pack, sha256

D = sha256(b"x")


def signer(body: bytes) -> bytes:
    return hmac.new(b"k", body, hashlib.sha256).digest()


def roundtrip(msg, batch=None):
    got, got_batch = decode_message(m.wire(msg, batch))
    assert got == msg
    assert got_batch == batch
    return got


def test_votes_round_trip_and_sign_the_body_only() -> None:
    pp = m.make_pre_prepare(3, 7, D, "a", signer)
    assert pp.signature == signer(pp.body)
    assert roundtrip(pp, b"batch").digest == D
    roundtrip(m.make_prepare(3, 7, D, "b", signer))
    roundtrip(m.make_commit(3, 7, D, "c", signer))
    roundtrip(m.make_checkpoint(64, D, "c", signer))


def test_composite_messages_round_trip() -> None:
    pp = m.make_pre_prepare(0, 1, D, "a", signer)
    prepares = tuple(m.make_prepare(0, 1, D, r, signer) for r in ("b", "c"))
    cps = tuple(m.make_checkpoint(4, D, r, signer) for r in ("a", "b", "c"))
    vc = m.make_view_change(1, 4, D, cps, (m.PreparedCert(pp, prepares),), "b", signer)
    assert roundtrip(vc).prepared[0].prepares == prepares
    nv = m.make_new_view(1, (vc,), (m.make_pre_prepare(1, 5, m.NULL_DIGEST, "b", signer),), "b", signer)
    assert roundtrip(nv).view_changes[0] == vc
    roundtrip(m.make_status(2, False, 9, 8, "a", signer))
    roundtrip(m.make_forward((b"r1", b"r2"), "a", signer))
    roundtrip(m.make_checkpoint_proof(4, D, cps, "a", signer))
    roundtrip(m.make_batch_fetch(3, D, "a", signer))
    roundtrip(m.make_batch_reply(3, D, b"bytes", "a", signer))
    cert = CommitCertificate(0, 3, D, (("a", b"s1"), ("b", b"s2")))
    got = roundtrip(m.make_committed(3, b"bb", certificate_fields(cert), cert, "a", signer))
    assert got.certificate == cert


def test_batch_encoding_and_null_batch() -> None:
    b = m.Batch(123, (b"a", b"bc"))
    assert m.decode_batch(b.encode()) == b
    assert m.NULL_BATCH.is_null and not b.is_null
    assert m.NULL_DIGEST == sha256(m.NULL_BATCH.encode())
    assert m.Request(b"tx").id == sha256(b"tx") == m.request_id(b"tx")
    for bad in (pack([1]), pack([-1, []]), pack([1, ["s"]]), b"\xc1", pack([True, []])):
        with pytest.raises(MessageError):
            m.decode_batch(bad)


BAD_FRAMES = [
    b"",
    b"\xc1",
    pack(1),
    pack([b"x"]),
    pack([pack([m.PREPARE, 0, 1, D, "a"]), b"s", b"batch"]),  # batch on a prepare
    pack([pack([m.PREPARE, 0, 1, D[:31], "a"]), b"s"]),  # short digest
    pack([pack([m.PREPARE, -1, 1, D, "a"]), b"s"]),  # negative view
    pack([pack([m.PREPARE, True, 1, D, "a"]), b"s"]),  # bool is not an int
    pack([pack([m.PREPARE, 0, 1, D, ""]), b"s"]),  # empty id
    pack([pack([m.PREPARE, 0, 1, D]), b"s"]),  # arity
    pack([pack([99, 0]), b"s"]),  # unknown tag
    pack([pack([m.STATUS, 0, 1, 2, 3, "a"]), b"s"]),  # active not bool
    pack([pack([m.NEW_VIEW, 1, [[pack([m.PREPARE, 0, 1, D, "a"]), b"s"]], [], "a"]), b"s"]),
    pack([pack([m.PREPARE, 0, 1, D, "a"]), b"s" * 200]),  # oversized signature
    msgpack.packb([msgpack.packb({"b": 1, "a": 2}), b"s"]),  # non-canonical body
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_malformed_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(MessageError):
        decode_message(frame)


def test_non_canonical_outer_frame_is_refused() -> None:
    body = pack([m.PREPARE, 0, 1, D, "a"])
    # msgpack bin 32 header for a short value: valid msgpack, not canonical
    frame = b"\x92" + b"\xc6" + len(body).to_bytes(4, "big") + body + b"\xc4\x01s"
    with pytest.raises(MessageError):
        decode_message(frame)


def _replica() -> Replica:
    cfg = ReplicaConfig(node_ids=("a", "b", "c", "d"))
    return Replica(cfg, "b", signer, lambda r, b, s: hmac.compare_digest(signer(b), s))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_replica_never_raises_on_random_bytes(data: bytes) -> None:
    r = _replica()
    r.on_message("a", data, 1000)
    assert r.last_delivered_seq == 0


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | st.binary(max_size=40)
                    | st.text(max_size=5), lambda c: st.lists(c, max_size=6), max_leaves=30))
def test_replica_never_raises_on_random_structures(obj: object) -> None:
    r = _replica()
    for frame in (pack(obj), pack([pack(obj), b"sig"]), pack([pack([m.VIEW_CHANGE, obj]), b"s"])):
        r.on_message("a", frame, 1000)
    assert r.view == 0
