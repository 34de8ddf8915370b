"""What a replica persists, under which keys, and how it is read back after a crash.

Owns: the key layout of the consensus store (the runtime keeps these keys under its own
prefix) and ``RecoveredState``. A replica persists, before sending the vote it covers:
- ``view``: current view and whether it is active (written before a VIEW-CHANGE is sent);
- ``vc``: our VIEW-CHANGE for the view we are moving to, ``nv``: the NEW-VIEW we accepted;
- ``pp/<seq>``: the pre-prepare we accepted (or issued) in the latest view, with its batch,
  so after a restart we never prepare or pre-prepare another digest in that view;
- ``pc/<seq>``: our prepared certificate (before our COMMIT), which a later VIEW-CHANGE
  must report (§4.4: committed batches survive view changes through prepared certificates);
- ``oc/<seq>``: our own CHECKPOINT messages; ``stable``: the stable checkpoint and its proof.
Everything at or below the stable checkpoint is deleted (§4.3 garbage collection).
Read back: where the replica resumes (``RecoveredState.resume_view``) and its message log
(``rebuild_slots``). Also ``VoteFloor``: the views a replica that lost this state may not vote in.

Never: touches a database itself (it emits and reads plain key/value pairs).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable

from pienode.consensus.codec import MessageError
from pienode.consensus.decoding import parse_nested, parse_prepared
from pienode.consensus.log import Slot
from pienode.consensus.messages import (
    CHECKPOINT, GENESIS_DIGEST, NEW_VIEW, PRE_PREPARE, VIEW_CHANGE, Checkpoint, NewView,
    PrePrepare, PreparedCert, Signer, ViewChange, decode_batch, make_commit, make_prepare, pair,
    prepared_fields,
)
from pienode.encoding import pack, unpack
from pienode.errors import EncodingError, StorageError

#: Bump when the layout changes; stored under ``KEY_LAYOUT``.
LAYOUT_VERSION = 1
KEY_LAYOUT = b"layout"
KEY_VIEW = b"view"
KEY_VIEW_CHANGE = b"vc"
KEY_NEW_VIEW = b"nv"
KEY_STABLE = b"stable"
PREFIX_PRE_PREPARE = b"pp/"
PREFIX_PREPARED = b"pc/"
PREFIX_OWN_CHECKPOINT = b"oc/"


def seq_key(prefix: bytes, seq: int) -> bytes:
    return prefix + struct.pack(">Q", seq)


def view_value(view: int, active: bool) -> bytes:
    return pack([view, active])


def pre_prepare_value(pp: PrePrepare, batch_bytes: bytes | None) -> bytes:
    return pack([pair(pp), batch_bytes])


def prepared_value(cert: PreparedCert) -> bytes:
    return pack(prepared_fields(cert))


def stable_value(seq: int, digest: bytes, proof: tuple[Checkpoint, ...]) -> bytes:
    return pack([seq, digest, [pair(c) for c in proof]])


Item = tuple[bytes, bytes | None]


def pre_prepare_item(pp: PrePrepare, batch_bytes: bytes | None) -> Item:
    return seq_key(PREFIX_PRE_PREPARE, pp.seq), pre_prepare_value(pp, batch_bytes)


def prepared_item(cert: PreparedCert) -> Item:
    return seq_key(PREFIX_PREPARED, cert.pre_prepare.seq), prepared_value(cert)


def own_checkpoint_item(cp: Checkpoint) -> Item:
    return seq_key(PREFIX_OWN_CHECKPOINT, cp.seq), pack(pair(cp))


def view_change_items(vc: ViewChange) -> list[Item]:
    """Moving to ``vc.view``: written before ``vc`` is sent."""
    return [(KEY_VIEW, view_value(vc.view, False)), (KEY_VIEW_CHANGE, pack(pair(vc))),
            (KEY_NEW_VIEW, None)]


def new_view_items(nv: NewView) -> list[Item]:
    return [(KEY_VIEW, view_value(nv.view, True)), (KEY_VIEW_CHANGE, None),
            (KEY_NEW_VIEW, pack(pair(nv)))]


def stable_items(seq: int, digest: bytes, proof: tuple[Checkpoint, ...], slot_seqs: Iterable[int],
                 own_checkpoint_seqs: Iterable[int]) -> list[Item]:
    """A new stable checkpoint, and the deletion of the votes and our own checkpoints at or
    below it (§4.3 garbage collection)."""
    items: list[Item] = [(KEY_STABLE, stable_value(seq, digest, proof))]
    for s in slot_seqs:
        items += [(seq_key(PREFIX_PRE_PREPARE, s), None), (seq_key(PREFIX_PREPARED, s), None)]
    items += [(seq_key(PREFIX_OWN_CHECKPOINT, s), None) for s in own_checkpoint_seqs]
    return items


@dataclass(slots=True)
class RecoveredState:
    """A replica's durable state as read back after a restart."""

    last_executed_seq: int
    last_executed_digest: bytes
    view: int = 0
    active: bool = True
    view_change: ViewChange | None = None
    new_view: NewView | None = None
    stable_seq: int = 0
    stable_digest: bytes = GENESIS_DIGEST
    stable_proof: tuple[Checkpoint, ...] = ()
    pre_prepares: dict[int, tuple[PrePrepare, bytes | None]] = field(default_factory=dict)
    prepared: dict[int, PreparedCert] = field(default_factory=dict)
    own_checkpoints: dict[int, Checkpoint] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, bytes]], last_executed_seq: int,
                   last_executed_digest: bytes) -> "RecoveredState":
        """Rebuild from the persisted pairs (keys without the runtime's prefix).

        Raises:
            StorageError: if a stored value is corrupt (our own data: stop loudly).
        """
        st = cls(last_executed_seq, last_executed_digest)
        try:
            for key, value in items:
                st._load(bytes(key), bytes(value))
        except (EncodingError, ValueError, TypeError, struct.error) as exc:
            raise StorageError(f"corrupt consensus state: {exc}") from None
        return st

    def resume_view(self) -> tuple[int, bool, ViewChange | None, int | None]:
        """Where a restarted replica stands in the view sequence.

        Returns:
            (view, active, our VIEW-CHANGE to hold and resend, a view to start a view
            change to afresh). A replica that crashed between persisting a new view and
            persisting its VIEW-CHANGE for it comes back active in the view before and
            starts that view change again, so it never moves to a view without one.
        """
        if self.active:
            return self.view, True, None, None
        if self.view_change is not None and self.view_change.view == self.view:
            return self.view, False, self.view_change, None
        return self.view - 1, True, None, self.view

    def _load(self, key: bytes, value: bytes) -> None:
        if key == KEY_LAYOUT:
            if unpack(value) != LAYOUT_VERSION:
                raise StorageError("unknown consensus key layout", key=key.hex())
        elif key == KEY_VIEW:
            view, active = unpack(value)
            self.view, self.active = int(view), bool(active)
        elif key == KEY_VIEW_CHANGE:
            self.view_change = parse_nested(unpack(value), VIEW_CHANGE)
        elif key == KEY_NEW_VIEW:
            self.new_view = parse_nested(unpack(value), NEW_VIEW)
        elif key == KEY_STABLE:
            seq, digest, proof = unpack(value)
            self.stable_seq, self.stable_digest = int(seq), bytes(digest)
            self.stable_proof = tuple(parse_nested(c, CHECKPOINT) for c in proof)
        elif key.startswith(PREFIX_PRE_PREPARE):
            pp_pair, batch_bytes = unpack(value)
            pp = parse_nested(pp_pair, PRE_PREPARE)
            self.pre_prepares[pp.seq] = (pp, batch_bytes)
        elif key.startswith(PREFIX_PREPARED):
            cert = parse_prepared(unpack(value))
            self.prepared[cert.pre_prepare.seq] = cert
        elif key.startswith(PREFIX_OWN_CHECKPOINT):
            cp = parse_nested(unpack(value), CHECKPOINT)
            self.own_checkpoints[cp.seq] = cp
        else:
            raise MessageError(f"unknown consensus key {key[:16]!r}")


def rebuild_slots(st: RecoveredState, low: int, high: int, view: int, node_id: str,
                  signer: Signer) -> tuple[dict[int, Slot], int]:
    """The message log of the window (low, high] as our persisted votes left it.

    Our own PREPARE/COMMIT for what we persisted in ``view`` are re-created (same content,
    so never a conflicting vote) so that retransmission can resend them. Returns the slots
    and the next sequence number we may pre-prepare if we are the primary.
    """
    slots: dict[int, Slot] = {}
    next_seq = 1
    for seq, (pp, batch_bytes) in st.pre_prepares.items():
        if not low < seq <= high:
            continue
        slot = slots.setdefault(seq, Slot(seq))
        slot.pre_prepare = pp
        if batch_bytes is not None:
            try:
                slot.batches[pp.digest] = (decode_batch(batch_bytes), batch_bytes)
            except MessageError:
                pass  # the batch is fetched again from peers
        if pp.view == view and pp.replica != node_id:
            slot.prepares[node_id] = make_prepare(pp.view, seq, pp.digest, node_id, signer)
        if pp.view == view and pp.replica == node_id:
            next_seq = max(next_seq, seq + 1)
    for seq, cert in st.prepared.items():
        if not low < seq <= high:
            continue
        slot = slots.setdefault(seq, Slot(seq))
        slot.prepared_cert = cert
        pp = cert.pre_prepare
        if pp.view == view:
            slot.commit_sent_view = pp.view
            slot.commits[node_id] = make_commit(pp.view, seq, pp.digest, node_id, signer)
    return slots, next_seq


class VoteFloor:
    """The views below which we cast no vote of any kind.

    A replica that lost its consensus store (home wiped) after having run may have voted
    before the wipe, in views it no longer knows. It votes in no view up to the highest view
    that f+1 of its peers report (one of them is correct, so it is at least the view of the
    latest vote we could have cast, unless all of us were there), and joins from the next
    view on. A replica with its store intact has floor -1: every view is open.
    """

    def __init__(self, amnesic: bool) -> None:
        #: Votes are cast only in views above this; None = not known yet (amnesic start).
        self.floor: int | None = None if amnesic else -1
        self._peer_views: dict[str, int] = {}

    def allows(self, view: int) -> bool:
        return self.floor is not None and view > self.floor

    def learn(self, peer: str, view: int, own_view: int, quorum: int, weak_quorum: int) -> bool:
        """A peer told us its view; True when this fixed the floor (once quorum-1 peers did)."""
        if self.floor is not None:
            return False
        self._peer_views[peer] = view
        if len(self._peer_views) < quorum - 1 or not self._peer_views:
            return False
        views = sorted(self._peer_views.values(), reverse=True)
        self.floor = max(views[min(weak_quorum, len(views)) - 1], own_view)
        return True
