"""Normal-case vote bookkeeping on its own (pienode/consensus/votes.py)."""

from __future__ import annotations

from pienode.consensus import messages as m
from pienode.consensus import votes
from pienode.consensus.certificate import CommitCertificate, certificate_fields
from pienode.consensus.log import Slot
from pienode.encoding import sha256
from tests.consensus_helpers import sign

D1, D2 = bytes([1]) * 32, bytes([2]) * 32


def pp(view: int = 0, seq: int = 1, digest: bytes = D1, replica: str = "r0") -> m.PrePrepare:
    return m.make_pre_prepare(view, seq, digest, replica, sign)


def prep(replica: str, view: int = 0, seq: int = 1, digest: bytes = D1) -> m.Prepare:
    return m.make_prepare(view, seq, digest, replica, sign)


def commit(replica: str, view: int = 0, seq: int = 1, digest: bytes = D1) -> m.Commit:
    return m.make_commit(view, seq, digest, replica, sign)


def screen_pp(msg: m.PrePrepare, slot: Slot | None, **kw: object) -> str | None:
    args: dict[str, object] = dict(view=0, active=True, primary="r0", in_window=True, has_batch=True)
    args.update(kw)
    return votes.screen_pre_prepare(msg, slot, **args)  # type: ignore[arg-type]


def test_pre_prepare_screens_in_order() -> None:
    assert screen_pp(pp(), None) is None
    assert screen_pp(pp(), None, active=False) == "wrong_view"
    assert screen_pp(pp(view=1), None) == "wrong_view"
    assert screen_pp(pp(replica="r1"), None) == "not_primary"
    assert screen_pp(pp(), None, in_window=False) == "out_of_window"
    assert screen_pp(pp(), None, has_batch=False) == "missing_batch"
    slot = Slot(1)
    slot.pre_prepare = pp()
    assert screen_pp(pp(), slot, has_batch=False) == "duplicate"  # known before missing
    assert screen_pp(pp(digest=D2), slot) == "equivocation"
    slot.pre_prepare = pp(view=0)
    assert screen_pp(pp(view=1), slot, view=1) is None  # a new view may pre-prepare again


def test_pre_prepare_conflicting_with_a_commit_certificate_is_dropped() -> None:
    slot = Slot(1)
    slot.commits = {r: commit(r) for r in ("r0", "r1", "r2")}
    slot.certificate = votes.commit_certificate(slot, 0, D1, 3)
    assert screen_pp(pp(view=1, digest=D2), slot, view=1) == "conflicts_committed"
    assert screen_pp(pp(view=1, digest=D1), slot, view=1) is None


def test_prepare_and_commit_screens() -> None:
    slot = Slot(1)
    kw = dict(view=0, primary="r0", in_window=True)
    assert votes.screen_prepare(prep("r1"), None, **kw) is None  # type: ignore[arg-type]
    assert votes.screen_prepare(prep("r0"), None, **kw) == "not_primary"  # type: ignore[arg-type]
    assert votes.screen_prepare(prep("r1", view=1), None, **kw) == "wrong_view"  # type: ignore[arg-type]
    slot.prepares["r1"] = prep("r1")
    assert votes.screen_prepare(prep("r1"), slot, **kw) == "duplicate"  # type: ignore[arg-type]
    assert votes.screen_prepare(prep("r1", digest=D2), slot, **kw) == "equivocation"  # type: ignore[arg-type]
    assert votes.screen_commit(commit("r1"), None, view=0, in_window=False) == "out_of_window"
    assert votes.screen_commit(commit("r1", view=2), None, view=1, in_window=True) == "wrong_view"
    assert votes.screen_commit(commit("r1", view=0), None, view=1, in_window=True) is None
    slot.commits["r1"] = commit("r1", view=1)
    assert votes.screen_commit(commit("r1", view=0), slot, view=1, in_window=True) == "duplicate"
    assert votes.screen_commit(commit("r1", view=2), slot, view=2, in_window=True) is None


def test_prepared_needs_quorum_minus_one_matching_prepares_from_backups() -> None:
    slot = Slot(1)
    assert votes.prepared_certificate(slot, 3) is None  # no pre-prepare
    slot.pre_prepare = pp()
    slot.prepares = {"r0": prep("r0"), "r3": prep("r3"), "r2": prep("r2", digest=D2)}
    assert votes.prepared_certificate(slot, 3) is None  # r0 is the primary, r2 differs
    slot.prepares["r2"] = prep("r2")
    slot.prepares["r1"] = prep("r1")
    cert = votes.prepared_certificate(slot, 3)
    assert cert is not None and cert.pre_prepare == slot.pre_prepare
    assert [p.replica for p in cert.prepares] == ["r1", "r2"]  # lowest ids, exactly q-1


def test_commit_certificate_needs_a_quorum_on_one_view_and_digest() -> None:
    slot = Slot(5)
    slot.commits = {"r1": commit("r1", seq=5), "r2": commit("r2", seq=5, view=1),
                    "r3": commit("r3", seq=5, digest=D2)}
    assert votes.commit_certificate(slot, 0, D1, 2) is None
    slot.commits["r0"] = commit("r0", seq=5)
    cert = votes.commit_certificate(slot, 0, D1, 2)
    assert cert is not None and (cert.view, cert.seq, cert.digest) == (0, 5, D1)
    assert [r for r, _ in cert.commits] == ["r0", "r1"]


def test_batches_are_checked_against_their_digest_and_encoding() -> None:
    batch = m.Batch(7, (b"a", b"b"))
    data = batch.encode()
    assert votes.parse_batch(data, sha256(data)) == batch
    assert votes.parse_batch(data, D1) == "bad_digest"
    junk = b"\xc1"
    assert votes.parse_batch(junk, sha256(junk)) == "bad_batch"


def test_timestamps_must_advance_and_stay_near_our_clock() -> None:
    assert votes.timestamp_ok(1001, 1000, 1000, 50)
    assert not votes.timestamp_ok(1000, 1000, 1000, 50)
    assert not votes.timestamp_ok(1100, 1000, 1000, 50)
    assert votes.timestamp_ok(1050, 1000, 1000, 50)


def test_wanted_digests_include_the_prepared_one() -> None:
    slot = Slot(1)
    slot.pre_prepare = pp(view=1, digest=D2, replica="r1")
    assert votes.wanted_digests(slot) == {D2}
    slot.pre_prepare, slot.prepares = pp(), {r: prep(r) for r in ("r1", "r2")}
    slot.prepared_cert = votes.prepared_certificate(slot, 3)
    slot.pre_prepare = pp(view=1, digest=D2, replica="r1")
    assert votes.wanted_digests(slot) == {D1, D2}


def test_committed_screens_old_far_and_duplicate_batches() -> None:
    cert = CommitCertificate(0, 5, D1, (("r1", b"x"),))
    msg = m.make_committed(5, b"batch", certificate_fields(cert), cert, "r1", sign)
    kw = dict(last_delivered=4, in_window=True)
    assert votes.screen_committed(msg, None, **kw) is None  # type: ignore[arg-type]
    assert votes.screen_committed(msg, None, last_delivered=5, in_window=True) == "old_seq"
    assert votes.screen_committed(msg, None, last_delivered=4, in_window=False) == "out_of_window"
    other = m.make_committed(6, b"batch", certificate_fields(cert), cert, "r1", sign)
    assert votes.screen_committed(other, None, **kw) == "old_seq"  # certificate for another seq
    slot = Slot(5)
    slot.certificate = cert
    assert votes.screen_committed(msg, slot, **kw) is None  # certified, batch still missing
    slot.batches[D1] = (m.Batch(1, ()), b"")
    assert votes.screen_committed(msg, slot, **kw) == "duplicate"
