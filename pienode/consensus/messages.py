"""PBFT wire messages: their fields, their canonical bytes, and strict decoding.

Owns: ``Batch`` and every message the replicas exchange, and the rule for what is signed.

Wire format: a message is ``pack([body, signature])`` (a pre-prepare appends the batch
bytes: ``pack([body, signature, batch])``), where ``body = pack([tag, ...fields])`` is the
canonical encoding of the message without its signature. The signer signs exactly ``body``
(the runtime adds the "pbft" domain), so a receiver verifies the bytes it received and
nothing is re-encoded. Messages nested inside others (checkpoint proofs, prepared
certificates, view changes) travel as ``[body, signature]`` pairs and keep their original
signer. As in Castro-Liskov §4.2 the pre-prepare signs the batch digest, not the batch.

Never: verifies signatures (``replica`` does, through the injected verifier), reads a clock,
or raises anything but ``MessageError`` on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from pienode.encoding import packb, sha256
from pienode.errors import EncodingError

PRE_PREPARE = 1
PREPARE = 2
COMMIT = 3
CHECKPOINT = 4
VIEW_CHANGE = 5
NEW_VIEW = 6
STATUS = 7
FORWARD = 8
COMMITTED = 9
CHECKPOINT_PROOF = 10
BATCH_FETCH = 11
BATCH_REPLY = 12

DIGEST_SIZE = 32
MAX_SIGNATURE = 128
MAX_ID = 256
#: Digest of the genesis state (sequence number 0) in checkpoints.
GENESIS_DIGEST = bytes(DIGEST_SIZE)

Signer = Callable[[bytes], bytes]


class MessageError(EncodingError):
    """Bytes that are not a well-formed PBFT message (the sender's fault)."""


MAX_FRAME = 64 * 1024 * 1024


def pack(obj: Any) -> bytes:
    """Canonical msgpack of a map-free value (what ``pienode.encoding.pack`` gives for it).

    Messages hold only lists, ints, bools, str and bytes, so the generic canonicaliser's
    walk (sorting maps, refusing floats) can be skipped on this hot path.
    """
    return packb(obj)


def unpack(data: bytes, max_bytes: int = MAX_FRAME) -> Any:
    """Strict decode: one msgpack value whose re-encoding is exactly ``data``.

    Raises:
        MessageError: for malformed or non-canonical bytes.
    """
    if type(data) is not bytes or len(data) > max_bytes:
        raise MessageError("expected bytes within the size limit")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        canonical = packb(obj) == data
    except Exception:  # msgpack raises several unrelated types
        raise MessageError("malformed msgpack") from None
    if not canonical or isinstance(obj, dict):
        raise MessageError("non-canonical encoding")
    return obj


@dataclass(frozen=True, slots=True)
class Request:
    """An opaque client request; the replica never looks inside ``payload``."""

    payload: bytes

    @property
    def id(self) -> bytes:
        return sha256(self.payload)


def request_id(payload: bytes) -> bytes:
    return sha256(payload)


@dataclass(frozen=True, slots=True)
class Batch:
    """What one sequence number orders; it becomes block ``seq``.

    ``timestamp_ms`` is the primary's clock. The null batch (timestamp 0, no requests)
    fills gaps after a view change (§4.4) and becomes an empty block.
    """

    timestamp_ms: int
    requests: tuple[bytes, ...]

    def encode(self) -> bytes:
        return pack([self.timestamp_ms, list(self.requests)])

    @property
    def is_null(self) -> bool:
        return self.timestamp_ms == 0 and not self.requests


def decode_batch(data: bytes) -> Batch:
    obj = unpack(data)
    if not isinstance(obj, list) or len(obj) != 2:
        raise MessageError("batch: expected [timestamp, requests]")
    ts, reqs = obj
    _uint(ts, "batch timestamp")
    if not isinstance(reqs, list) or not all(isinstance(r, bytes) for r in reqs):
        raise MessageError("batch: requests must be a list of bytes")
    return Batch(ts, tuple(reqs))


NULL_BATCH = Batch(0, ())
NULL_BATCH_BYTES = NULL_BATCH.encode()
NULL_DIGEST = sha256(NULL_BATCH_BYTES)


# ---- field checks ---------------------------------------------------------------------

#: Views, sequence numbers and timestamps stay far from the 64-bit limit of the encoding,
#: so ``view + 1`` and friends can never become unencodable.
MAX_UINT = 2**62


def _uint(x: Any, what: str) -> int:
    if type(x) is not int or not 0 <= x < MAX_UINT:
        raise MessageError(f"{what}: expected a non-negative int below 2**62")
    return x


def _digest(x: Any, what: str = "digest") -> bytes:
    if type(x) is not bytes or len(x) != DIGEST_SIZE:
        raise MessageError(f"{what}: expected {DIGEST_SIZE} bytes")
    return x


def _id(x: Any) -> str:
    if type(x) is not str or not x or len(x) > MAX_ID:
        raise MessageError("replica id: expected a short non-empty str")
    return x


def _list(x: Any, what: str) -> list[Any]:
    if type(x) is not list:
        raise MessageError(f"{what}: expected a list")
    return x


# ---- messages --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PrePrepare:
    view: int
    seq: int
    digest: bytes
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Prepare:
    view: int
    seq: int
    digest: bytes
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    view: int
    seq: int
    digest: bytes
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    state_digest: bytes
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class PreparedCert:
    """A pre-prepare and quorum-1 matching prepares: proof that ``digest`` prepared (§4.2)."""

    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]


@dataclass(frozen=True, slots=True)
class ViewChange:
    view: int  # the view being moved to
    stable_seq: int
    stable_digest: bytes
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[PreparedCert, ...]
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class NewView:
    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Status:
    view: int
    active: bool
    last_delivered: int
    stable_seq: int
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Requests a backup passes to the primary when they wait too long (§4.4)."""

    requests: tuple[bytes, ...]
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed batch with its commit certificate, for a replica that fell behind."""

    seq: int
    batch_bytes: bytes
    certificate: Any  # CommitCertificate (import cycle kept out of this module)
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class CheckpointProof:
    seq: int
    state_digest: bytes
    checkpoints: tuple[Checkpoint, ...]
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class BatchFetch:
    seq: int
    digest: bytes
    replica: str
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class BatchReply:
    seq: int
    digest: bytes
    batch_bytes: bytes
    replica: str
    body: bytes
    signature: bytes


Message = (
    PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | Status | Forward
    | Committed | CheckpointProof | BatchFetch | BatchReply
)


def pair(msg: Any) -> list[bytes]:
    """The ``[body, signature]`` form a message takes when nested in another."""
    return [msg.body, msg.signature]


def wire(msg: Any, batch_bytes: bytes | None = None) -> bytes:
    """Top-level bytes of ``msg`` (a pre-prepare may carry its batch)."""
    if batch_bytes is None:
        return pack([msg.body, msg.signature])
    return pack([msg.body, msg.signature, batch_bytes])


# ---- building (signing) ------------------------------------------------------------------

def _signed(fields: list[Any], signer: Signer) -> tuple[bytes, bytes]:
    body = pack(fields)
    return body, signer(body)


def vote_body(tag: int, view: int, seq: int, digest: bytes, replica: str) -> bytes:
    return pack([tag, view, seq, digest, replica])


def make_pre_prepare(view: int, seq: int, digest: bytes, replica: str, signer: Signer) -> PrePrepare:
    body = vote_body(PRE_PREPARE, view, seq, digest, replica)
    return PrePrepare(view, seq, digest, replica, body, signer(body))


def make_prepare(view: int, seq: int, digest: bytes, replica: str, signer: Signer) -> Prepare:
    body = vote_body(PREPARE, view, seq, digest, replica)
    return Prepare(view, seq, digest, replica, body, signer(body))


def make_commit(view: int, seq: int, digest: bytes, replica: str, signer: Signer) -> Commit:
    body = vote_body(COMMIT, view, seq, digest, replica)
    return Commit(view, seq, digest, replica, body, signer(body))


def make_checkpoint(seq: int, state_digest: bytes, replica: str, signer: Signer) -> Checkpoint:
    body, sig = _signed([CHECKPOINT, seq, state_digest, replica], signer)
    return Checkpoint(seq, state_digest, replica, body, sig)


def prepared_fields(cert: PreparedCert) -> list[Any]:
    return [pair(cert.pre_prepare), [pair(p) for p in cert.prepares]]


def make_view_change(
    view: int,
    stable_seq: int,
    stable_digest: bytes,
    checkpoint_proof: tuple[Checkpoint, ...],
    prepared: tuple[PreparedCert, ...],
    replica: str,
    signer: Signer,
) -> ViewChange:
    body, sig = _signed(
        [VIEW_CHANGE, view, stable_seq, stable_digest, [pair(c) for c in checkpoint_proof],
         [prepared_fields(p) for p in prepared], replica],
        signer,
    )
    return ViewChange(view, stable_seq, stable_digest, checkpoint_proof, prepared, replica, body, sig)


def make_new_view(
    view: int,
    view_changes: tuple[ViewChange, ...],
    pre_prepares: tuple[PrePrepare, ...],
    replica: str,
    signer: Signer,
) -> NewView:
    body, sig = _signed(
        [NEW_VIEW, view, [pair(v) for v in view_changes], [pair(p) for p in pre_prepares], replica],
        signer,
    )
    return NewView(view, view_changes, pre_prepares, replica, body, sig)


def make_status(view: int, active: bool, last_delivered: int, stable_seq: int, replica: str,
                signer: Signer) -> Status:
    body, sig = _signed([STATUS, view, active, last_delivered, stable_seq, replica], signer)
    return Status(view, active, last_delivered, stable_seq, replica, body, sig)


def make_forward(requests: tuple[bytes, ...], replica: str, signer: Signer) -> Forward:
    body, sig = _signed([FORWARD, list(requests), replica], signer)
    return Forward(requests, replica, body, sig)


def make_committed(seq: int, batch_bytes: bytes, cert_fields: list[Any], certificate: Any,
                   replica: str, signer: Signer) -> Committed:
    body, sig = _signed([COMMITTED, seq, batch_bytes, cert_fields, replica], signer)
    return Committed(seq, batch_bytes, certificate, replica, body, sig)


def make_checkpoint_proof(seq: int, state_digest: bytes, checkpoints: tuple[Checkpoint, ...],
                          replica: str, signer: Signer) -> CheckpointProof:
    body, sig = _signed(
        [CHECKPOINT_PROOF, seq, state_digest, [pair(c) for c in checkpoints], replica], signer
    )
    return CheckpointProof(seq, state_digest, checkpoints, replica, body, sig)


def make_batch_fetch(seq: int, digest: bytes, replica: str, signer: Signer) -> BatchFetch:
    body, sig = _signed([BATCH_FETCH, seq, digest, replica], signer)
    return BatchFetch(seq, digest, replica, body, sig)


def make_batch_reply(seq: int, digest: bytes, batch_bytes: bytes, replica: str,
                     signer: Signer) -> BatchReply:
    body, sig = _signed([BATCH_REPLY, seq, digest, batch_bytes, replica], signer)
    return BatchReply(seq, digest, batch_bytes, replica, body, sig)


# ---- decoding -----------------------------------------------------------------------------

def _split_pair(obj: Any) -> tuple[bytes, bytes]:
    if type(obj) is not list or len(obj) != 2:
        raise MessageError("expected [body, signature]")
    body, sig = obj
    if type(body) is not bytes or type(sig) is not bytes or len(sig) > MAX_SIGNATURE:
        raise MessageError("expected [body, signature] as bytes")
    return body, sig


def _fields(body: bytes) -> list[Any]:
    fields = unpack(body)
    if type(fields) is not list or not fields or type(fields[0]) is not int:
        raise MessageError("body: expected [tag, ...]")
    return fields


def _arity(fields: list[Any], n: int) -> None:
    if len(fields) != n:
        raise MessageError(f"message tag {fields[0]}: expected {n} fields")


def _vote(fields: list[Any], body: bytes, sig: bytes, tag: int, cls: Any) -> Message:
    if fields[0] != tag:
        raise MessageError(f"expected tag {tag}")
    _arity(fields, 5)
    msg: Message = cls(_uint(fields[1], "view"), _uint(fields[2], "seq"), _digest(fields[3]),
                       _id(fields[4]), body, sig)
    return msg


def parse_nested(obj: Any, tag: int) -> Any:
    """Decode a nested ``[body, signature]`` pair that must carry message ``tag``."""
    body, sig = _split_pair(obj)
    msg = _decode_body(_fields(body), body, sig)
    if _TAGS[type(msg)] != tag:
        raise MessageError(f"nested message: expected tag {tag}")
    return msg


def _parse_prepared(obj: Any) -> PreparedCert:
    if type(obj) is not list or len(obj) != 2:
        raise MessageError("prepared certificate: expected [pre_prepare, prepares]")
    pp = parse_nested(obj[0], PRE_PREPARE)
    prepares = tuple(parse_nested(p, PREPARE) for p in _list(obj[1], "prepares"))
    return PreparedCert(pp, prepares)


def _decode_body(fields: list[Any], body: bytes, sig: bytes) -> Message:
    tag = fields[0]
    if tag == PRE_PREPARE:
        return _vote(fields, body, sig, PRE_PREPARE, PrePrepare)
    if tag == PREPARE:
        return _vote(fields, body, sig, PREPARE, Prepare)
    if tag == COMMIT:
        return _vote(fields, body, sig, COMMIT, Commit)
    if tag == CHECKPOINT:
        _arity(fields, 4)
        return Checkpoint(_uint(fields[1], "seq"), _digest(fields[2]), _id(fields[3]), body, sig)
    if tag == VIEW_CHANGE:
        _arity(fields, 7)
        proof = tuple(parse_nested(c, CHECKPOINT) for c in _list(fields[4], "checkpoint proof"))
        prepared = tuple(_parse_prepared(p) for p in _list(fields[5], "prepared"))
        return ViewChange(_uint(fields[1], "view"), _uint(fields[2], "stable seq"),
                          _digest(fields[3]), proof, prepared, _id(fields[6]), body, sig)
    if tag == NEW_VIEW:
        _arity(fields, 5)
        vcs = tuple(parse_nested(v, VIEW_CHANGE) for v in _list(fields[2], "view changes"))
        pps = tuple(parse_nested(p, PRE_PREPARE) for p in _list(fields[3], "pre-prepares"))
        return NewView(_uint(fields[1], "view"), vcs, pps, _id(fields[4]), body, sig)
    if tag == STATUS:
        _arity(fields, 6)
        if type(fields[2]) is not bool:
            raise MessageError("status: active must be bool")
        return Status(_uint(fields[1], "view"), fields[2], _uint(fields[3], "last delivered"),
                      _uint(fields[4], "stable seq"), _id(fields[5]), body, sig)
    if tag == FORWARD:
        _arity(fields, 3)
        reqs = _list(fields[1], "requests")
        if not all(type(r) is bytes for r in reqs):
            raise MessageError("forward: requests must be bytes")
        return Forward(tuple(reqs), _id(fields[2]), body, sig)
    if tag == COMMITTED:
        _arity(fields, 5)
        from pienode.consensus.certificate import certificate_from_fields

        if type(fields[2]) is not bytes:
            raise MessageError("committed: batch must be bytes")
        cert = certificate_from_fields(fields[3])
        return Committed(_uint(fields[1], "seq"), fields[2], cert, _id(fields[4]), body, sig)
    if tag == CHECKPOINT_PROOF:
        _arity(fields, 5)
        cps = tuple(parse_nested(c, CHECKPOINT) for c in _list(fields[3], "checkpoints"))
        return CheckpointProof(_uint(fields[1], "seq"), _digest(fields[2]), cps, _id(fields[4]),
                               body, sig)
    if tag == BATCH_FETCH:
        _arity(fields, 4)
        return BatchFetch(_uint(fields[1], "seq"), _digest(fields[2]), _id(fields[3]), body, sig)
    if tag == BATCH_REPLY:
        _arity(fields, 5)
        if type(fields[3]) is not bytes:
            raise MessageError("batch reply: batch must be bytes")
        return BatchReply(_uint(fields[1], "seq"), _digest(fields[2]), fields[3], _id(fields[4]),
                          body, sig)
    raise MessageError(f"unknown message tag {tag}")


_TAGS: dict[type, int] = {
    PrePrepare: PRE_PREPARE, Prepare: PREPARE, Commit: COMMIT, Checkpoint: CHECKPOINT,
    ViewChange: VIEW_CHANGE, NewView: NEW_VIEW, Status: STATUS, Forward: FORWARD,
    Committed: COMMITTED, CheckpointProof: CHECKPOINT_PROOF, BatchFetch: BATCH_FETCH,
    BatchReply: BATCH_REPLY,
}


def decode_message(data: bytes, *, max_bytes: int = MAX_FRAME) -> tuple[Message, bytes | None]:
    """Decode top-level wire bytes into a message and the batch bytes it carries, if any.

    Raises:
        MessageError: for anything malformed (signatures are not checked here).
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    outer = unpack(data, max_bytes)
    if type(outer) is not list or len(outer) not in (2, 3):
        raise MessageError("frame: expected [body, signature(, batch)]")
    body, sig = _split_pair(outer[:2])
    msg = _decode_body(_fields(body), body, sig)
    batch_bytes = None
    if len(outer) == 3:
        if not isinstance(msg, PrePrepare) or type(outer[2]) is not bytes:
            raise MessageError("frame: only a pre-prepare carries a batch")
        batch_bytes = outer[2]
    return msg, batch_bytes
