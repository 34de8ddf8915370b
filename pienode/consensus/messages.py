"""PBFT wire messages: their fields, their canonical bytes, and how they are signed.

Owns: ``Batch`` and every message the replicas exchange, the builders that sign them, and
the rule for what is signed (``codec`` holds the encoding, ``decoding`` the way back).

Wire format: a message is ``pack([body, signature])`` (a pre-prepare appends the batch
bytes: ``pack([body, signature, batch])``), where ``body = pack([tag, ...fields])`` is the
canonical encoding of the message without its signature. The signer signs exactly ``body``
(the runtime adds the "pbft" domain), so a receiver verifies the bytes it received and
nothing is re-encoded. Messages nested inside others (checkpoint proofs, prepared
certificates, view changes) travel as ``[body, signature]`` pairs and keep their original
signer. As in Castro-Liskov §4.2 the pre-prepare signs the batch digest, not the batch.

Never: verifies signatures, reads a clock, or raises anything but ``MessageError`` on bad
input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pienode.consensus.codec import DIGEST_SIZE, MessageError, pack, uint, unpack
from pienode.encoding import sha256

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

#: Digest of the genesis state (sequence number 0) in checkpoints.
GENESIS_DIGEST = bytes(DIGEST_SIZE)

Signer = Callable[[bytes], bytes]


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
    uint(ts, "batch timestamp")
    if not isinstance(reqs, list) or not all(isinstance(r, bytes) for r in reqs):
        raise MessageError("batch: requests must be a list of bytes")
    return Batch(ts, tuple(reqs))


NULL_BATCH = Batch(0, ())
NULL_BATCH_BYTES = NULL_BATCH.encode()
NULL_DIGEST = sha256(NULL_BATCH_BYTES)


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
