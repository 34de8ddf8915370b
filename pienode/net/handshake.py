"""The peer-link handshake: mutual authentication and session keys, with no I/O.

Owns: the handshake messages, the transcript, the signature checks against the genesis keys,
the derivation of the two directional AEAD keys and the responder's key confirmation. Never
touches a socket, never logs, and never exposes the ephemeral secret or the derived keys
except to the link that uses them.

Why not TLS: TLS 1.3 has no secp256k1 signature scheme, and the genesis keys are secp256k1.
So this is a signed ephemeral Diffie-Hellman exchange in the ISO/IEC 9798-3 style (the
"signed DH with both identities under the signature" that SIGMA analyses), built only from
vetted primitives in ``cryptography`` (X25519, HKDF-SHA256, HMAC-SHA256, AES-256-GCM) and
libsecp256k1 (through ``pienode.crypto.keys``).

Protocol (I = initiator, who dials; R = responder; ``frame(x)`` = 4-byte length || x)::

    m1  I -> R : pack({v, net, from: I, to: R, eph: X25519 pub_I, nonce: 32 random bytes})
    m2  R -> I : pack({v, net, from: R, to: I, eph: X25519 pub_R, nonce: 32 random bytes})
    th        = SHA-256("pie/peer-handshake/v1" || frame(m1) || frame(m2))
    a_R R -> I : pack({sig: Sign_R("peer-handshake", "responder" || th)})
    a_I I -> R : pack({sig: Sign_I("peer-handshake", "initiator" || th)})
    k_IR || k_RI || k_fin = HKDF-SHA256(ikm = X25519(eph_I, eph_R), salt = th,
                                        info = "pie/peer-link/v1/keys", length = 96)
    fin R -> I : pack({mac: HMAC-SHA256(k_fin, "accepted" || th)})

R sends m2 and a_R back to back and sends ``fin`` only once a_I verified, so the exchange
takes two round trips and each side knows the other accepted it before it calls the link
up (without ``fin``, an initiator that R rejects would believe itself connected until R
hung up). After it, every frame is AES-256-GCM under the sender's directional key with a 96-bit nonce that is the
frame's counter in that direction (first frame 0). The receiver never reads a nonce from the
wire: it uses the next counter it expects, so a replayed, dropped, reordered or tampered frame
fails its tag, and a failed tag closes the link.

Why this is safe (identity hiding is not a goal: node ids are public in genesis):
- Authentication: each side signs a hash of the whole transcript, which holds both
  ephemeral keys, both fresh nonces and *both* identities (``from`` and ``to``), with its
  genesis key, and each side checks the other's signature against the genesis key of the id
  it expects. An attacker without a node key cannot produce that signature.
- No replay: the transcript contains the verifier's own fresh ephemeral key and nonce, so an
  old signature never verifies in a new session.
- No identity misbinding or unknown-key-share: the signed transcript names the intended
  peer, so R's signature made for a session with I cannot be presented to anyone else.
- No reflection: the role label ("initiator"/"responder") is signed, so a node's own
  signature sent back to it does not verify in the other role; a node also refuses its own id.
- No cross-protocol use: every signature uses the domain "peer-handshake" (see
  ``pienode.encoding.signing_payload``), so no transaction or vote signature is usable here
  and a handshake signature is usable nowhere else. ``net`` binds the consortium.
- Forward secrecy: the session keys come only from the ephemeral X25519 secret, which is
  dropped when the handshake ends; a later theft of a node key does not open recorded
  traffic. Key confirmation is explicit in ``fin`` (R -> I), and the first frame that
  decrypts confirms the keys to R.
- The DH result is bound to the authenticated transcript by using ``th`` as the HKDF salt,
  and the two directions use different keys, so a frame cannot be reflected back to its
  sender. A low-order X25519 point makes ``cryptography`` refuse the exchange (all-zero
  secret), which fails the handshake.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pienode.crypto.keys import PrivateKey, PublicKey
from pienode.encoding import pack, unpack
from pienode.errors import NetError

PROTOCOL_VERSION = 1
SIGN_DOMAIN = "peer-handshake"
TRANSCRIPT_LABEL = b"pie/peer-handshake/v1"
KEY_INFO = b"pie/peer-link/v1/keys"
#: No handshake message is near this; a stranger cannot make us buffer more.
MAX_HANDSHAKE_MESSAGE = 1024
NONCE_SIZE = 32
MAX_ID_LENGTH = 128


class HandshakeError(NetError):
    """The peer failed to authenticate or sent a malformed handshake message."""


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """What a finished handshake yields. ``send_key``/``recv_key`` are secrets: never log them."""

    peer_id: str
    send_key: bytes
    recv_key: bytes
    transcript_hash: bytes

    def __repr__(self) -> str:  # the keys must never reach a log line
        return f"SessionKeys(peer_id={self.peer_id!r})"


def _framed(msg: bytes) -> bytes:
    return len(msg).to_bytes(4, "big") + msg


def _transcript_hash(m1: bytes, m2: bytes) -> bytes:
    return hashlib.sha256(TRANSCRIPT_LABEL + _framed(m1) + _framed(m2)).digest()


def _new_ephemeral() -> tuple[X25519PrivateKey, bytes]:
    eph = X25519PrivateKey.generate()
    pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return eph, pub


def _hello(network_id: str, sender: str, receiver: str, eph_pub: bytes) -> bytes:
    return pack(
        {
            "v": PROTOCOL_VERSION,
            "net": network_id,
            "from": sender,
            "to": receiver,
            "eph": eph_pub,
            "nonce": os.urandom(NONCE_SIZE),
        }
    )


def _parse_hello(data: bytes, network_id: str) -> dict[str, object]:
    if len(data) > MAX_HANDSHAKE_MESSAGE:
        raise HandshakeError("hello too large")
    try:
        msg = unpack(data, max_bytes=MAX_HANDSHAKE_MESSAGE)
    except Exception:
        raise HandshakeError("malformed hello") from None
    if not isinstance(msg, dict) or set(msg) != {"v", "net", "from", "to", "eph", "nonce"}:
        raise HandshakeError("malformed hello")
    if msg["v"] != PROTOCOL_VERSION:
        raise HandshakeError("unsupported handshake version")
    if msg["net"] != network_id:
        raise HandshakeError("peer is on another network")
    for key in ("from", "to"):
        value = msg[key]
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
            raise HandshakeError("malformed node id")
    eph, nonce = msg["eph"], msg["nonce"]
    if not isinstance(eph, bytes) or len(eph) != 32:
        raise HandshakeError("malformed ephemeral key")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise HandshakeError("malformed nonce")
    return msg


def _auth_message(key: PrivateKey, role: bytes, th: bytes) -> bytes:
    return pack({"sig": key.sign(SIGN_DOMAIN, role + th)})


def _check_auth(data: bytes, public_key: PublicKey, role: bytes, th: bytes) -> None:
    try:
        msg = unpack(data, max_bytes=MAX_HANDSHAKE_MESSAGE)
    except Exception:
        raise HandshakeError("malformed auth message") from None
    if not isinstance(msg, dict) or set(msg) != {"sig"} or not isinstance(msg["sig"], bytes):
        raise HandshakeError("malformed auth message")
    if not public_key.verify(SIGN_DOMAIN, role + th, msg["sig"]):
        raise HandshakeError("bad handshake signature")


def _derive(eph: X25519PrivateKey, peer_eph: bytes, th: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (k_IR, k_RI, k_fin)."""
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(peer_eph))
    except ValueError:  # low-order point: all-zero shared secret
        raise HandshakeError("degenerate ephemeral key") from None
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=th, info=KEY_INFO).derive(shared)
    return okm[:32], okm[32:64], okm[64:]


def _fin_mac(k_fin: bytes, th: bytes) -> hmac.HMAC:
    mac = hmac.HMAC(k_fin, hashes.SHA256())
    mac.update(b"accepted" + th)
    return mac


class Initiator:
    """The dialing side: ``m1 = start()``; ``a_i = finish(m2, a_r)``; ``keys = confirm(fin)``."""

    __slots__ = ("_key", "_own_id", "_peer_id", "_peer_key", "_net", "_eph", "_m1", "_pending", "keys")

    def __init__(
        self, own_id: str, key: PrivateKey, peer_id: str, peer_key: PublicKey, network_id: str = "pie"
    ) -> None:
        if peer_id == own_id:
            raise HandshakeError("refusing to dial myself")
        self._key, self._own_id, self._peer_id = key, own_id, peer_id
        self._peer_key, self._net = peer_key, network_id
        self._eph: X25519PrivateKey | None = None
        self._m1 = b""
        self._pending: tuple[SessionKeys, bytes] | None = None
        self.keys: SessionKeys | None = None

    def start(self) -> bytes:
        eph, pub = _new_ephemeral()
        self._eph = eph
        self._m1 = _hello(self._net, self._own_id, self._peer_id, pub)
        return self._m1

    def finish(self, m2: bytes, a_r: bytes) -> bytes:
        """Check the responder's hello and signature; return our auth message.

        Raises:
            HandshakeError: wrong peer, wrong network, bad signature or malformed input.
        """
        if self._eph is None:
            raise HandshakeError("handshake not started")
        hello = _parse_hello(m2, self._net)
        if hello["from"] != self._peer_id or hello["to"] != self._own_id:
            raise HandshakeError("responder is not the node we dialed")
        th = _transcript_hash(self._m1, m2)
        _check_auth(a_r, self._peer_key, b"responder", th)
        k_ir, k_ri, k_fin = _derive(self._eph, hello["eph"], th)  # type: ignore[arg-type]
        self._eph = None  # forward secrecy: drop the ephemeral secret as soon as possible
        keys = SessionKeys(self._peer_id, send_key=k_ir, recv_key=k_ri, transcript_hash=th)
        self._pending = (keys, k_fin)
        return _auth_message(self._key, b"initiator", th)

    def confirm(self, fin: bytes) -> SessionKeys:
        """Check that the responder accepted us; only then are the session keys released.

        Raises:
            HandshakeError: ``fin`` is malformed or does not match (the responder rejected
                us, or someone other than the authenticated responder sent it).
        """
        if self._pending is None:
            raise HandshakeError("handshake not finished")
        keys, k_fin = self._pending
        try:
            msg = unpack(fin, max_bytes=MAX_HANDSHAKE_MESSAGE)
        except Exception:
            raise HandshakeError("malformed confirmation") from None
        if not isinstance(msg, dict) or set(msg) != {"mac"} or not isinstance(msg["mac"], bytes):
            raise HandshakeError("malformed confirmation")
        try:
            _fin_mac(k_fin, keys.transcript_hash).verify(msg["mac"])
        except InvalidSignature:
            raise HandshakeError("bad key confirmation") from None
        self._pending = None
        self.keys = keys
        return keys


class Responder:
    """The accepting side: ``m2, a_r = respond(m1)``; ``keys, fin = finish(a_i)``."""

    __slots__ = ("_key", "_own_id", "_peers", "_net", "_th", "_eph", "_peer_eph", "_peer_id")

    def __init__(
        self,
        own_id: str,
        key: PrivateKey,
        peers: Mapping[str, PublicKey],
        network_id: str = "pie",
    ) -> None:
        self._key, self._own_id, self._peers, self._net = key, own_id, peers, network_id
        self._th = b""
        self._eph: X25519PrivateKey | None = None
        self._peer_eph = b""
        self._peer_id = ""

    @property
    def claimed_peer(self) -> str:
        """The id the initiator claimed (not yet authenticated until ``finish`` returns)."""
        return self._peer_id

    def respond(self, m1: bytes) -> tuple[bytes, bytes]:
        """Check the initiator's hello; return (m2, a_r).

        Raises:
            HandshakeError: unknown node id, not addressed to us, or malformed.
        """
        hello = _parse_hello(m1, self._net)
        peer_id = hello["from"]
        assert isinstance(peer_id, str)
        if hello["to"] != self._own_id:
            raise HandshakeError("hello addressed to another node")
        if peer_id == self._own_id or peer_id not in self._peers:
            raise HandshakeError("unknown node id")
        self._peer_id = peer_id
        eph, pub = _new_ephemeral()
        m2 = _hello(self._net, self._own_id, peer_id, pub)
        self._th = _transcript_hash(m1, m2)
        # The Diffie-Hellman step waits for ``finish``: a stranger who cannot sign costs us
        # one signature, not a key agreement as well.
        self._eph, self._peer_eph = eph, hello["eph"]  # type: ignore[assignment]
        return m2, _auth_message(self._key, b"responder", self._th)

    def finish(self, a_i: bytes) -> tuple[SessionKeys, bytes]:
        """Check the initiator's signature against its genesis key.

        Returns:
            The session keys and ``fin``, the key confirmation to send back.

        Raises:
            HandshakeError: bad or malformed signature, or a degenerate ephemeral key.
        """
        if self._eph is None:
            raise HandshakeError("handshake not started")
        _check_auth(a_i, self._peers[self._peer_id], b"initiator", self._th)
        k_ir, k_ri, k_fin = _derive(self._eph, self._peer_eph, self._th)
        self._eph = None  # forward secrecy: drop the ephemeral secret as soon as possible
        keys = SessionKeys(self._peer_id, send_key=k_ri, recv_key=k_ir, transcript_hash=self._th)
        return keys, pack({"mac": _fin_mac(k_fin, self._th).finalize()})
