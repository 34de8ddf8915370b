"""View change messages built and checked, and the new primary's choice of pre-prepares
(§4.4, §4.5).

Owns: pure checks of checkpoint proofs, prepared certificates, VIEW-CHANGE and NEW-VIEW
messages; ``compute_reissue``, the deterministic function from a set of view changes to
the pre-prepares a NEW-VIEW must carry (the new primary and every backup run it, so a
backup accepts a NEW-VIEW only if it recomputes the same list); building our VIEW-CHANGE
and, as the new primary, the NEW-VIEW; what a new primary takes over from the log.

Never: mutates replica state, sends anything, or raises on a peer's bad input (every
check returns a bool or None).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from pienode.consensus.config import ReplicaConfig
from pienode.consensus.log import Slot
from pienode.consensus.messages import (
    GENESIS_DIGEST, NULL_DIGEST, Checkpoint, NewView, PreparedCert, Signer, ViewChange,
    make_new_view, make_pre_prepare, make_view_change,
)

SigCheck = Callable[[str, bytes, bytes], bool]


def checkpoint_proof_ok(seq: int, digest: bytes, proof: Sequence[Checkpoint],
                        config: ReplicaConfig, sig_ok: SigCheck) -> bool:
    """A quorum of distinct members signed CHECKPOINT(seq, digest); seq 0 needs none."""
    if seq == 0:
        return digest == GENESIS_DIGEST and not proof
    if seq % config.checkpoint_interval:
        return False
    members = set(config.node_ids)
    signers = set()
    for cp in proof:
        if cp.seq != seq or cp.state_digest != digest or cp.replica not in members:
            return False
        if cp.replica in signers:
            return False
        signers.add(cp.replica)
    if len(signers) < config.quorum:
        return False
    return all(sig_ok(cp.replica, cp.body, cp.signature) for cp in proof)


def prepared_cert_ok(cert: PreparedCert, config: ReplicaConfig, sig_ok: SigCheck) -> bool:
    """The view's primary pre-prepared and quorum-1 other members prepared the same digest."""
    pp = cert.pre_prepare
    primary = config.primary_of(pp.view)
    if pp.replica != primary:
        return False
    members = set(config.node_ids)
    senders = set()
    for p in cert.prepares:
        if (p.view != pp.view or p.seq != pp.seq or p.digest != pp.digest
                or p.replica == primary or p.replica not in members or p.replica in senders):
            return False
        senders.add(p.replica)
    if len(senders) < config.quorum - 1:
        return False
    if not sig_ok(pp.replica, pp.body, pp.signature):
        return False
    return all(sig_ok(p.replica, p.body, p.signature) for p in cert.prepares)


def view_change_ok(vc: ViewChange, config: ReplicaConfig, sig_ok: SigCheck) -> bool:
    """Full check of a VIEW-CHANGE, signature included."""
    if vc.view < 1 or vc.replica not in config.node_ids:
        return False
    low, high = vc.stable_seq, vc.stable_seq + config.watermark_window
    seqs = set()
    for cert in vc.prepared:
        s = cert.pre_prepare.seq
        if not low < s <= high or s in seqs or cert.pre_prepare.view >= vc.view:
            return False
        seqs.add(s)
    if not sig_ok(vc.replica, vc.body, vc.signature):
        return False
    if not checkpoint_proof_ok(vc.stable_seq, vc.stable_digest, vc.checkpoint_proof, config, sig_ok):
        return False
    return all(prepared_cert_ok(c, config, sig_ok) for c in vc.prepared)


def compute_reissue(vcs: Sequence[ViewChange]) -> tuple[ViewChange, list[tuple[int, bytes]]]:
    """The view change holding the highest stable checkpoint (min-s) and the (seq, digest)
    pairs the new primary must pre-prepare for (min-s, max-s] (§4.4): for each seq, the
    digest prepared in the highest view, or the null batch if none prepared it.
    """
    base = max(vcs, key=lambda v: (v.stable_seq, v.replica))
    min_s = base.stable_seq
    best: dict[int, tuple[int, bytes]] = {}
    for vc in vcs:
        for cert in vc.prepared:
            pp = cert.pre_prepare
            if pp.seq <= min_s:
                continue
            cur = best.get(pp.seq)
            if cur is None or (pp.view, pp.digest) > cur:
                best[pp.seq] = (pp.view, pp.digest)
    max_s = max(best, default=min_s)
    return base, [(n, best[n][1] if n in best else NULL_DIGEST) for n in range(min_s + 1, max_s + 1)]


def new_view_ok(nv: NewView, config: ReplicaConfig, sig_ok: SigCheck,
                vc_ok: Callable[[ViewChange], bool]) -> tuple[ViewChange, list[tuple[int, bytes]]] | None:
    """Check a NEW-VIEW; returns what ``compute_reissue`` gives for it, or None if invalid."""
    primary = config.primary_of(nv.view)
    if nv.view < 1 or nv.replica != primary:
        return None
    senders = {vc.replica for vc in nv.view_changes}
    if len(senders) != len(nv.view_changes) or len(senders) < config.quorum:
        return None
    if any(vc.view != nv.view for vc in nv.view_changes):
        return None
    if not sig_ok(nv.replica, nv.body, nv.signature):
        return None
    if not all(vc_ok(vc) for vc in nv.view_changes):
        return None
    base, reissue = compute_reissue(nv.view_changes)
    if [(pp.seq, pp.digest) for pp in nv.pre_prepares] != reissue:
        return None
    for pp in nv.pre_prepares:
        if pp.view != nv.view or pp.replica != primary or not sig_ok(pp.replica, pp.body, pp.signature):
            return None
    return base, reissue


def build_view_change(view: int, slots: Mapping[int, Slot], stable_seq: int, stable_digest: bytes,
                      stable_proof: tuple[Checkpoint, ...], replica: str,
                      signer: Signer) -> ViewChange:
    """Our VIEW-CHANGE for ``view``: the stable checkpoint with its proof, and our prepared
    certificate for each sequence number above it that we prepared (§4.4)."""
    prepared = tuple(cert for s in sorted(slots)
                     if (cert := slots[s].prepared_cert) is not None and s > stable_seq)
    return make_view_change(view, stable_seq, stable_digest, stable_proof, prepared, replica, signer)


def build_new_view(view: int, own: ViewChange, same: Sequence[ViewChange], quorum: int,
                   replica: str, signer: Signer) -> tuple[NewView, ViewChange, list[tuple[int, bytes]]]:
    """The new primary's NEW-VIEW from ``same`` (a quorum of VIEW-CHANGEs for ``view``):
    ours and the lowest other ids, with the pre-prepares ``compute_reissue`` asks for.
    Returns it with the base view change and the re-issued (seq, digest) pairs."""
    others = sorted((vc for vc in same if vc.replica != replica), key=lambda v: v.replica)
    chosen = [own] + others[: quorum - 1]
    base, reissue = compute_reissue(chosen)
    pps = tuple(make_pre_prepare(view, n, d, replica, signer) for n, d in reissue)
    return make_new_view(view, tuple(chosen), pps, replica, signer), base, reissue


def in_flight_requests(slots: Mapping[int, Slot], last_delivered: int,
                       view: int) -> list[tuple[bytes, ...]]:
    """The requests of batches pre-prepared in ``view`` (re-issued by its NEW-VIEW) and not
    delivered yet. Only these are in flight for a new primary: stale batches of older views
    (never prepared) must not hide their requests from its queue."""
    return [slot.batches[slot.pre_prepare.digest][0].requests
            for s, slot in slots.items()
            if s > last_delivered and slot.pre_prepare is not None
            and slot.pre_prepare.view == view and slot.pre_prepare.digest in slot.batches]


def newest_timestamp(slots: Mapping[int, Slot], floor: int) -> int:
    """The highest batch timestamp in the log (at least ``floor``): a new primary's next
    batch must be later than any it may re-issue."""
    return max([floor] + [batch.timestamp_ms for slot in slots.values()
                          for batch, _ in slot.batches.values()])
