"""PBFT consensus core: a pure state machine (see ``replica``); no I/O anywhere below."""

from pienode.consensus.actions import (
    Action, Broadcast, CancelTimer, Deliver, FetchState, Persist, Send, SetTimer, TimerId,
)
from pienode.consensus.certificate import (
    CommitCertificate, decode_certificate, encode_certificate, verify_certificate,
)
from pienode.consensus.config import ReplicaConfig
from pienode.consensus.messages import Batch, NULL_DIGEST, Request, request_id
from pienode.consensus.recovery import RecoveredState
from pienode.consensus.replica import Replica

__all__ = [
    "Action", "Batch", "Broadcast", "CancelTimer", "CommitCertificate", "Deliver",
    "FetchState", "NULL_DIGEST", "Persist", "RecoveredState", "Replica", "ReplicaConfig",
    "Request", "Send", "SetTimer", "TimerId", "decode_certificate", "encode_certificate",
    "request_id", "verify_certificate",
]
