"""Normal-case vote bookkeeping (Castro-Liskov §4.2): which PRE-PREPARE, PREPARE and COMMIT
messages a replica takes into a slot, and when a slot's votes make a certificate.

Owns: pure screens that name why a vote is dropped (the replica's ``stats`` key) or return
None to take it; the checks a proposed batch must pass (digest, encoding, timestamp); the
prepared predicate and the committed-local predicate over a ``Slot``.

Never: verifies a signature (the replica does so only after a screen passes, so what is
dropped on cheap grounds costs no signature check), mutates a slot, sends or persists.
"""

from __future__ import annotations

from pienode.consensus.certificate import CommitCertificate
from pienode.consensus.log import Slot
from pienode.consensus.codec import MessageError
from pienode.consensus.messages import (
    Batch, Commit, Committed, PrePrepare, PreparedCert, Prepare, decode_batch,
)
from pienode.encoding import sha256


def screen_pre_prepare(pp: PrePrepare, slot: Slot | None, *, view: int, active: bool,
                       primary: str, in_window: bool, has_batch: bool) -> str | None:
    """Why ``pp`` is not a new pre-prepare to check further, or None.

    Two answers need the caller: ``"equivocation"`` (the primary already pre-prepared
    another digest here in this view; count it only if ``pp``'s signature holds) and
    ``"duplicate"`` (already taken; the copy may bring a batch we still lack).
    """
    if not active or pp.view != view:
        return "wrong_view"
    if pp.replica != primary:
        return "not_primary"
    if not in_window:
        return "out_of_window"
    known = slot.pre_prepare if slot is not None else None
    if known is not None and known.view == view:
        return "duplicate" if known.digest == pp.digest else "equivocation"
    if not has_batch:
        return "missing_batch"
    if slot is not None and slot.certificate is not None and slot.certificate.digest != pp.digest:
        return "conflicts_committed"  # only a faulty primary does this
    return None


def screen_prepare(p: Prepare, slot: Slot | None, *, view: int, primary: str,
                   in_window: bool) -> str | None:
    """Why PREPARE ``p`` is dropped, or None. Prepares for the view we are changing to are
    kept (``view`` is already the new one): the NEW-VIEW may arrive after them."""
    if p.view != view:
        return "wrong_view"
    if p.replica == primary:
        return "not_primary"
    if not in_window:
        return "out_of_window"
    old = slot.prepares.get(p.replica) if slot is not None else None
    if old is not None and old.view >= p.view:
        return "duplicate" if old.digest == p.digest else "equivocation"
    return None


def screen_commit(c: Commit, slot: Slot | None, *, view: int, in_window: bool) -> str | None:
    """Why COMMIT ``c`` is dropped, or None. Commits of earlier views still count: a
    certificate needs only a quorum that agrees on one (view, digest)."""
    if c.view > view:
        return "wrong_view"
    if not in_window:
        return "out_of_window"
    old = slot.commits.get(c.replica) if slot is not None else None
    if old is not None and old.view >= c.view:
        return "duplicate"
    return None


def screen_committed(msg: Committed, slot: Slot | None, *, last_delivered: int,
                     in_window: bool) -> str | None:
    """Why a COMMITTED (a batch with its commit certificate, for a replica behind) is
    dropped before its signature and certificate are checked, or None."""
    cert = msg.certificate
    if msg.seq <= last_delivered or cert.seq != msg.seq:
        return "old_seq"
    if not in_window:
        return "out_of_window"
    if slot is not None and slot.certificate is not None and cert.digest in slot.batches:
        return "duplicate"
    return None


def parse_batch(batch_bytes: bytes, digest: bytes) -> Batch | str:
    """The batch that ``batch_bytes`` encodes if they hash to ``digest``; else why not
    (``"bad_digest"`` or ``"bad_batch"``)."""
    if sha256(batch_bytes) != digest:
        return "bad_digest"
    try:
        return decode_batch(batch_bytes)
    except MessageError:
        return "bad_batch"


def timestamp_ok(timestamp_ms: int, last_delivered_ts: int, now_ms: int, max_skew_ms: int) -> bool:
    """A new batch's timestamp moves past the last delivered one and is near our clock, so
    block times grow and a faulty primary cannot date a block far away."""
    return timestamp_ms > last_delivered_ts and abs(timestamp_ms - now_ms) <= max_skew_ms


def prepared_certificate(slot: Slot, quorum: int) -> PreparedCert | None:
    """prepared(m, v, n, i): the slot's pre-prepare and quorum-1 matching PREPAREs from
    replicas other than its primary, the lowest ids first (so every copy is the same)."""
    pp = slot.pre_prepare
    if pp is None:
        return None
    matching = [p for r, p in slot.prepares.items()
                if p.view == pp.view and p.digest == pp.digest and r != pp.replica]
    need = quorum - 1
    if len(matching) < need:
        return None
    matching.sort(key=lambda p: p.replica)
    return PreparedCert(pp, tuple(matching[:need]))


def commit_certificate(slot: Slot, view: int, digest: bytes, quorum: int) -> CommitCertificate | None:
    """committed-local: a quorum of the slot's COMMITs signed (``view``, ``digest``)."""
    matching = sorted((c.replica, c.signature) for c in slot.commits.values()
                      if c.view == view and c.digest == digest)
    if len(matching) < quorum:
        return None
    return CommitCertificate(view, slot.seq, digest, tuple(matching))


def wanted_digests(slot: Slot) -> set[bytes | None]:
    """Digests whose batch this slot may still need: the one to deliver, and the one we
    prepared (a view change may re-issue it)."""
    wanted = {slot.needed_digest()}
    if slot.prepared_cert is not None:
        wanted.add(slot.prepared_cert.pre_prepare.digest)
    return wanted
