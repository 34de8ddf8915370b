"""The peer handshake as a pure exchange of messages: who is accepted, who is not, and why."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pienode.crypto.keys import PrivateKey
from pienode.encoding import pack, unpack
from pienode.net.handshake import HandshakeError, Initiator, Responder, SIGN_DOMAIN

A, B, C = "hospital-1", "hospital-2", "hospital-3"


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {name: PrivateKey.generate() for name in (A, B, C)}


def genesis(keys: dict[str, PrivateKey]) -> dict:
    return {name: k.public_key for name, k in keys.items()}


def run(initiator: Initiator, responder: Responder):
    m1 = initiator.start()
    m2, a_r = responder.respond(m1)
    a_i = initiator.finish(m2, a_r)
    r_keys, fin = responder.finish(a_i)
    assert initiator.keys is None  # nothing is released before the responder confirms
    return r_keys, initiator.confirm(fin)


def test_handshake_derives_matching_directional_keys(keys):
    r_keys, i_keys = run(
        Initiator(A, keys[A], B, keys[B].public_key), Responder(B, keys[B], genesis(keys))
    )
    assert r_keys.peer_id == A and i_keys.peer_id == B
    assert i_keys.send_key == r_keys.recv_key and i_keys.recv_key == r_keys.send_key
    assert i_keys.send_key != i_keys.recv_key
    assert i_keys.transcript_hash == r_keys.transcript_hash
    # The keys really work as AES-256-GCM keys across the two sides.
    nonce = bytes(12)
    sealed = AESGCM(i_keys.send_key).encrypt(nonce, b"hi", None)
    assert AESGCM(r_keys.recv_key).decrypt(nonce, sealed, None) == b"hi"
    assert keys[A].to_bytes().hex() not in repr(i_keys) and i_keys.send_key.hex() not in repr(i_keys)


def test_every_session_gets_fresh_keys(keys):
    first, _ = run(Initiator(A, keys[A], B, keys[B].public_key), Responder(B, keys[B], genesis(keys)))
    second, _ = run(Initiator(A, keys[A], B, keys[B].public_key), Responder(B, keys[B], genesis(keys)))
    assert first.send_key != second.send_key and first.transcript_hash != second.transcript_hash


def test_responder_rejects_unknown_node_id(keys):
    stranger = PrivateKey.generate()
    initiator = Initiator("stranger", stranger, B, keys[B].public_key)
    with pytest.raises(HandshakeError, match="unknown node id"):
        Responder(B, keys[B], genesis(keys)).respond(initiator.start())


def test_responder_rejects_hello_addressed_to_someone_else(keys):
    initiator = Initiator(A, keys[A], C, keys[C].public_key)
    with pytest.raises(HandshakeError, match="another node"):
        Responder(B, keys[B], genesis(keys)).respond(initiator.start())


def test_responder_rejects_its_own_id(keys):
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    hello = unpack(initiator.start())
    hello["from"] = B
    with pytest.raises(HandshakeError):
        Responder(B, keys[B], genesis(keys)).respond(pack(hello))


def test_initiator_holding_the_wrong_key_is_rejected(keys):
    # Claims to be A but signs with another key: the responder checks A's genesis key.
    impostor = Initiator(A, PrivateKey.generate(), B, keys[B].public_key)
    responder = Responder(B, keys[B], genesis(keys))
    m2, a_r = responder.respond(impostor.start())
    a_i = impostor.finish(m2, a_r)
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        responder.finish(a_i)


def test_responder_holding_the_wrong_key_is_rejected(keys):
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    impostor = Responder(B, PrivateKey.generate(), genesis(keys))
    m2, a_r = impostor.respond(initiator.start())
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        initiator.finish(m2, a_r)
    assert initiator.keys is None


def test_initiator_rejects_a_different_responder(keys):
    # C answers a dial meant for B (e.g. a wrong address): its hello says "from C".
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    m2, a_r = Responder(C, keys[C], genesis(keys)).respond(pack({**unpack(initiator.start()), "to": C}))
    with pytest.raises(HandshakeError, match="not the node we dialed"):
        initiator.finish(m2, a_r)


def test_signature_from_another_session_does_not_verify(keys):
    # A man in the middle relays B's signature from one session into another.
    i1, r1 = Initiator(A, keys[A], B, keys[B].public_key), Responder(B, keys[B], genesis(keys))
    i2, r2 = Initiator(A, keys[A], B, keys[B].public_key), Responder(B, keys[B], genesis(keys))
    m2_1, a_r1 = r1.respond(i1.start())
    m2_2, _ = r2.respond(i2.start())
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        i2.finish(m2_2, a_r1)


def test_reflected_signature_does_not_verify(keys):
    # The responder's own signature sent back as the initiator's: role labels differ.
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    responder = Responder(B, keys[B], {**genesis(keys), A: keys[B].public_key})
    m2, a_r = responder.respond(initiator.start())
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        responder.finish(a_r)


def test_tampered_hello_breaks_the_signature(keys):
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    responder = Responder(B, keys[B], genesis(keys))
    m2, a_r = responder.respond(initiator.start())
    hello = unpack(m2)
    hello["nonce"] = bytes(32)
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        initiator.finish(pack(hello), a_r)


def test_signature_is_domain_separated(keys):
    # A signature over the same bytes in another domain (say, a transaction) is useless here.
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    responder = Responder(B, keys[B], genesis(keys))
    m2, _ = responder.respond(initiator.start())
    import hashlib

    from pienode.net.handshake import TRANSCRIPT_LABEL

    m1 = initiator._m1  # noqa: SLF001 - rebuilding the transcript on purpose
    th = hashlib.sha256(
        TRANSCRIPT_LABEL + len(m1).to_bytes(4, "big") + m1 + len(m2).to_bytes(4, "big") + m2
    ).digest()
    wrong_domain = pack({"sig": keys[B].sign("tx", b"responder" + th)})
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        initiator.finish(m2, wrong_domain)
    assert SIGN_DOMAIN == "peer-handshake"


def test_other_network_is_rejected(keys):
    initiator = Initiator(A, keys[A], B, keys[B].public_key, network_id="other-consortium")
    with pytest.raises(HandshakeError, match="another network"):
        Responder(B, keys[B], genesis(keys)).respond(initiator.start())


def test_low_order_ephemeral_key_is_rejected_even_when_signed(keys):
    # A genuine but broken (or malicious) peer sends the all-zero point, which would give an
    # all-zero shared secret; both roles refuse it after checking the signature.
    from pienode.net.handshake import _transcript_hash

    responder = Responder(B, keys[B], genesis(keys))
    m1 = pack({**unpack(Initiator(A, keys[A], B, keys[B].public_key).start()), "eph": bytes(32)})
    m2, _ = responder.respond(m1)
    a_i = pack({"sig": keys[A].sign(SIGN_DOMAIN, b"initiator" + _transcript_hash(m1, m2))})
    with pytest.raises(HandshakeError, match="degenerate"):
        responder.finish(a_i)
    assert responder._eph is not None  # noqa: SLF001 - no keys were derived

    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    m1 = initiator.start()
    m2, _ = Responder(B, keys[B], genesis(keys)).respond(m1)
    m2 = pack({**unpack(m2), "eph": bytes(32)})
    a_r = pack({"sig": keys[B].sign(SIGN_DOMAIN, b"responder" + _transcript_hash(m1, m2))})
    with pytest.raises(HandshakeError, match="degenerate"):
        initiator.finish(m2, a_r)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"GET / HTTP/1.1\r\n", b"\x00" * 40, pack({"v": 1}), pack([1, 2, 3]), b"\xff" * 2000],
)
def test_garbage_hello_is_a_handshake_error(keys, garbage):
    with pytest.raises(HandshakeError):
        Responder(B, keys[B], genesis(keys)).respond(garbage)


def test_malformed_fields_are_rejected(keys):
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    hello = unpack(initiator.start())
    for field, value in (("eph", b"short"), ("nonce", b"\x01"), ("from", ""), ("v", 2), ("to", 5)):
        with pytest.raises(HandshakeError):
            Responder(B, keys[B], genesis(keys)).respond(pack({**hello, field: value}))


def test_finish_before_start_is_refused(keys):
    with pytest.raises(HandshakeError):
        Initiator(A, keys[A], B, keys[B].public_key).finish(b"", b"")
    with pytest.raises(HandshakeError):
        Responder(B, keys[B], genesis(keys)).finish(b"")
    with pytest.raises(HandshakeError):
        Initiator(A, keys[A], A, keys[A].public_key)


def test_key_confirmation_must_match(keys):
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    responder = Responder(B, keys[B], genesis(keys))
    m2, a_r = responder.respond(initiator.start())
    a_i = initiator.finish(m2, a_r)
    _, fin = responder.finish(a_i)
    forged = unpack(fin)
    forged["mac"] = bytes(32)
    for bad in (pack(forged), b"", pack({"mac": 5}), b"\xc1"):
        with pytest.raises(HandshakeError):
            initiator.confirm(bad)
        assert initiator.keys is None
    assert initiator.confirm(fin).peer_id == B


def test_confirmation_from_another_session_does_not_match(keys):
    sessions = []
    for _ in range(2):
        initiator = Initiator(A, keys[A], B, keys[B].public_key)
        responder = Responder(B, keys[B], genesis(keys))
        m2, a_r = responder.respond(initiator.start())
        _, fin = responder.finish(initiator.finish(m2, a_r))
        sessions.append((initiator, fin))
    with pytest.raises(HandshakeError, match="bad key confirmation"):
        sessions[0][0].confirm(sessions[1][1])


def test_confirm_before_finish_is_refused(keys):
    initiator = Initiator(A, keys[A], B, keys[B].public_key)
    initiator.start()
    with pytest.raises(HandshakeError):
        initiator.confirm(pack({"mac": bytes(32)}))
