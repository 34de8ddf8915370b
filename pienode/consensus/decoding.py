"""Strict decoding of PBFT wire bytes into messages (the inverse of ``messages``).

Owns: ``decode_message`` (top-level frames), ``parse_nested`` (a ``[body, signature]``
pair nested in another message or read back from disk) and ``parse_prepared``. Every
field is checked for type and range; the signed ``body`` is kept as received, so what a
receiver verifies is exactly what the sender signed.

Never: verifies signatures (``replica`` does, through the injected verifier), or raises
anything but ``MessageError`` on bad input.
"""

from __future__ import annotations

from typing import Any

from pienode.consensus.certificate import certificate_from_fields
from pienode.consensus.codec import (
    MAX_FRAME, MAX_SIGNATURE, MessageError, as_list, digest, replica_id, uint, unpack,
)
from pienode.consensus.messages import (
    BATCH_FETCH, BATCH_REPLY, CHECKPOINT, CHECKPOINT_PROOF, COMMIT, COMMITTED, FORWARD,
    NEW_VIEW, PRE_PREPARE, PREPARE, STATUS, VIEW_CHANGE, BatchFetch, BatchReply, Checkpoint,
    CheckpointProof, Commit, Committed, Forward, Message, NewView, PrePrepare, PreparedCert,
    Prepare, Status, ViewChange,
)


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
    msg: Message = cls(uint(fields[1], "view"), uint(fields[2], "seq"), digest(fields[3]),
                       replica_id(fields[4]), body, sig)
    return msg


def parse_nested(obj: Any, tag: int) -> Any:
    """Decode a nested ``[body, signature]`` pair that must carry message ``tag``."""
    body, sig = _split_pair(obj)
    msg = _decode_body(_fields(body), body, sig)
    if _TAGS[type(msg)] != tag:
        raise MessageError(f"nested message: expected tag {tag}")
    return msg


def parse_prepared(obj: Any) -> PreparedCert:
    """Decode the ``[pre_prepare, prepares]`` form of a prepared certificate."""
    if type(obj) is not list or len(obj) != 2:
        raise MessageError("prepared certificate: expected [pre_prepare, prepares]")
    pp = parse_nested(obj[0], PRE_PREPARE)
    prepares = tuple(parse_nested(p, PREPARE) for p in as_list(obj[1], "prepares"))
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
        return Checkpoint(uint(fields[1], "seq"), digest(fields[2]), replica_id(fields[3]), body,
                          sig)
    if tag == VIEW_CHANGE:
        _arity(fields, 7)
        proof = tuple(parse_nested(c, CHECKPOINT) for c in as_list(fields[4], "checkpoint proof"))
        prepared = tuple(parse_prepared(p) for p in as_list(fields[5], "prepared"))
        return ViewChange(uint(fields[1], "view"), uint(fields[2], "stable seq"),
                          digest(fields[3]), proof, prepared, replica_id(fields[6]), body, sig)
    if tag == NEW_VIEW:
        _arity(fields, 5)
        vcs = tuple(parse_nested(v, VIEW_CHANGE) for v in as_list(fields[2], "view changes"))
        pps = tuple(parse_nested(p, PRE_PREPARE) for p in as_list(fields[3], "pre-prepares"))
        return NewView(uint(fields[1], "view"), vcs, pps, replica_id(fields[4]), body, sig)
    if tag == STATUS:
        _arity(fields, 6)
        if type(fields[2]) is not bool:
            raise MessageError("status: active must be bool")
        return Status(uint(fields[1], "view"), fields[2], uint(fields[3], "last delivered"),
                      uint(fields[4], "stable seq"), replica_id(fields[5]), body, sig)
    if tag == FORWARD:
        _arity(fields, 3)
        reqs = as_list(fields[1], "requests")
        if not all(type(r) is bytes for r in reqs):
            raise MessageError("forward: requests must be bytes")
        return Forward(tuple(reqs), replica_id(fields[2]), body, sig)
    if tag == COMMITTED:
        _arity(fields, 5)
        if type(fields[2]) is not bytes:
            raise MessageError("committed: batch must be bytes")
        cert = certificate_from_fields(fields[3])
        return Committed(uint(fields[1], "seq"), fields[2], cert, replica_id(fields[4]), body, sig)
    if tag == CHECKPOINT_PROOF:
        _arity(fields, 5)
        cps = tuple(parse_nested(c, CHECKPOINT) for c in as_list(fields[3], "checkpoints"))
        return CheckpointProof(uint(fields[1], "seq"), digest(fields[2]), cps,
                               replica_id(fields[4]), body, sig)
    if tag == BATCH_FETCH:
        _arity(fields, 4)
        return BatchFetch(uint(fields[1], "seq"), digest(fields[2]), replica_id(fields[3]), body,
                          sig)
    if tag == BATCH_REPLY:
        _arity(fields, 5)
        if type(fields[3]) is not bytes:
            raise MessageError("batch reply: batch must be bytes")
        return BatchReply(uint(fields[1], "seq"), digest(fields[2]), fields[3],
                          replica_id(fields[4]), body, sig)
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
