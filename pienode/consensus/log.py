"""The message log of one sequence number (Castro-Liskov §4.2 "message log").

Owns: ``Slot``. Votes are kept per distinct sender, only the latest view's vote of each
sender, so a faulty replica cannot grow a slot beyond n entries per kind.

Never: verifies signatures or decides anything about the protocol.
"""

from __future__ import annotations

from pienode.consensus.certificate import CommitCertificate
from pienode.consensus.messages import Batch, Commit, PrePrepare, PreparedCert, Prepare


class Slot:
    __slots__ = (
        "seq", "pre_prepare", "batches", "prepares", "commits", "prepared_cert",
        "commit_sent_view", "certificate", "fetch_asked_ms",
    )

    def __init__(self, seq: int) -> None:
        self.seq = seq
        #: The pre-prepare accepted in the latest view (ours if we were its primary).
        self.pre_prepare: PrePrepare | None = None
        #: digest -> (batch, its encoding); a few entries at most (one per view).
        self.batches: dict[bytes, tuple[Batch, bytes]] = {}
        self.prepares: dict[str, Prepare] = {}
        self.commits: dict[str, Commit] = {}
        #: Proof that we prepared, from the highest view we prepared in (for VIEW-CHANGE).
        self.prepared_cert: PreparedCert | None = None
        self.commit_sent_view = -1
        self.certificate: CommitCertificate | None = None
        self.fetch_asked_ms = -1

    def needed_digest(self) -> bytes | None:
        """The digest whose batch we need to deliver this slot, if any."""
        if self.certificate is not None:
            return self.certificate.digest
        if self.pre_prepare is not None:
            return self.pre_prepare.digest
        return None
