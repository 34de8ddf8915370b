"""Transaction kinds: who may send each one, its body schema, and how it changes state.

Every rule here is deterministic: the same block gives the same receipts and writes on
every node. ``check_body`` runs at admission and again at execution; ``apply`` runs only at
execution, against the block's ``StateOverlay``, and raises ``TxRejected`` for a
deterministic refusal (recorded in the receipt; the transaction's writes are rolled back).

Later issues register more kinds (request, grant, deny, emergency, rotate) through
``register_kind``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pienode.encoding import pack_ordered
from pienode.errors import PieError, ValidationError
from pienode.identity.certs import UserCert
from pienode.identity.levels import LEVELS, ROLES, satisfies
from pienode.ledger import keys
from pienode.ledger.tx import Transaction, require_fields

if TYPE_CHECKING:
    from pienode.ledger.executor import ExecContext

SenderClass = Literal["node", "user", "consortium"]

ID_RE = re.compile(r"[a-z]{1,12}-[0-9a-f]{8,64}")
CID_RE = re.compile(r"b[a-z2-7]{20,120}")
SUMMARY_FIELD_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: Summary fields that would identify a person; the summary must stay non-identifying.
IDENTIFYING_FIELDS = frozenset(
    {"name", "first_name", "last_name", "full_name", "ssn", "social_security_number", "address",
     "phone", "email", "birth_date", "date_of_birth", "dob", "mrn", "passport", "national_id"}
)


class TxRejected(PieError):
    """A deterministic refusal of a transaction at execution time."""

    status = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.code = code


@dataclass(frozen=True, slots=True)
class TxKind:
    name: str
    senders: frozenset[str]
    check_body: Callable[[dict[str, Any]], None]
    apply: Callable[["ExecContext", Transaction], Any]
    #: Roles allowed to send it when the sender is a user (None: any role).
    roles: frozenset[str] | None = None


KINDS: dict[str, TxKind] = {}


def register_kind(kind: TxKind) -> TxKind:
    if kind.name in KINDS:
        raise ValueError(f"transaction kind {kind.name} registered twice")
    KINDS[kind.name] = kind
    return kind


def kind_of(tx: Transaction) -> TxKind:
    try:
        return KINDS[tx.kind]
    except KeyError:
        raise ValidationError(f"unknown transaction kind {tx.kind!r}") from None


# -- register_user ----------------------------------------------------------------------


def _check_register(body: dict[str, Any]) -> None:
    require_fields(body, {"cert": (dict, True)})
    UserCert.from_dict(body["cert"])


def _apply_register(ctx: "ExecContext", tx: Transaction) -> Any:
    cert = UserCert.from_dict(tx.body["cert"])
    if cert.hospital_id != tx.sender:
        raise TxRejected("bad_cert", "a hospital registers only users it certifies itself")
    try:
        cert.check(ctx.genesis.node(tx.sender).public_key)
    except ValidationError as exc:
        raise TxRejected("bad_cert", str(exc)) from None
    if not ID_RE.fullmatch(cert.user_id):
        raise TxRejected("bad_cert", "malformed user id")
    expected = ctx.genesis.role_levels.get(cert.role)
    if expected is None or cert.security_level != expected:
        raise TxRejected("bad_cert", f"role {cert.role} is certified at level {expected}, not {cert.security_level}")
    if ctx.state.exists(keys.user_key(cert.user_id)):
        raise TxRejected("duplicate_user", f"user {cert.user_id} is already registered")
    ctx.state.put(keys.user_key(cert.user_id), cert.to_dict())
    ctx.emit("user_registered", {"user_id": cert.user_id, "role": cert.role, "hospital_id": cert.hospital_id})
    return {"user_id": cert.user_id}


register_kind(TxKind("register_user", frozenset({"node"}), _check_register, _apply_register))


# -- upload_record (design paper, Table 4 and Algorithm 1) ---------------------------------

POLICY_SPEC: dict[str, tuple[Any, bool]] = {
    "level": (str, True),
    "roles": ((list, type(None)), False),
    "purposes": ((list, type(None)), False),
    "expires_at_ms": ((int, type(None)), False),
}

#: The fields of one record version (upload creates version 1, rotation the next ones).
VERSION_SPEC: dict[str, tuple[Any, bool]] = {
    "record_id": (str, True),
    "cid": (str, True),
    "size": (int, True),
    "capsule": (bytes, True),
    "delegating_key": (bytes, True),
    "verifying_key": (bytes, True),
    "sealed_keys": (dict, True),
}

UPLOAD_SPEC: dict[str, tuple[Any, bool]] = {
    **VERSION_SPEC,
    "patient_id": (str, True),
    "data_type": (str, True),
    "summary": (dict, True),
    "policy": (dict, True),
}


def check_policy(policy: dict[str, Any]) -> None:
    require_fields(policy, POLICY_SPEC)
    if policy["level"] not in LEVELS:
        raise ValidationError(f"policy level must be one of {', '.join(LEVELS)}")
    for name, allowed in (("roles", ROLES), ("purposes", None)):
        items = policy.get(name)
        if items is None:
            continue
        if len(items) > 16 or not all(isinstance(x, str) and 0 < len(x) <= 64 for x in items):
            raise ValidationError(f"policy {name} must be up to 16 short strings")
        if allowed is not None and any(x not in allowed for x in items):
            raise ValidationError(f"policy roles must be among {', '.join(allowed)}")


def check_summary(summary: dict[str, Any]) -> None:
    if len(summary) > 32:
        raise ValidationError("summary has more than 32 fields")
    for k, v in summary.items():
        if not SUMMARY_FIELD_RE.fullmatch(k):
            raise ValidationError(f"summary field {k!r} must be lower_snake_case, at most 32 characters")
        if k in IDENTIFYING_FIELDS:
            raise ValidationError(f"summary field {k!r} would identify the patient; it belongs in the encrypted record")
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ValidationError(f"summary field {k!r} must be a string or an integer")
        if isinstance(v, str) and len(v) > 128:
            raise ValidationError(f"summary field {k!r} is longer than 128 characters")
        if isinstance(v, int) and not -(2**53) < v < 2**53:
            raise ValidationError(f"summary field {k!r} is out of range")


RECORD_ID_RE = re.compile(r"rec-[0-9a-f]{32}")


def check_version_fields(body: dict[str, Any]) -> None:
    """The fields every record version carries (upload and rotation)."""
    if not CID_RE.fullmatch(body["cid"]):
        raise ValidationError("cid must be a base32 CIDv1 string")
    if body["size"] < 0:
        raise ValidationError("size must not be negative")
    if len(body["capsule"]) > 1024:
        raise ValidationError("capsule too large")
    for k in ("delegating_key", "verifying_key"):
        if len(body[k]) != 33:
            raise ValidationError(f"{k} must be a 33-byte compressed public key")
    sealed = body["sealed_keys"]
    if not 1 <= len(sealed) <= 4 or not all(isinstance(v, bytes) and len(v) <= 2048 for v in sealed.values()):
        raise ValidationError("sealed_keys must map 1 to 4 user ids to sealed key blobs")


def _check_upload(body: dict[str, Any]) -> None:
    require_fields(body, UPLOAD_SPEC)
    if not RECORD_ID_RE.fullmatch(body["record_id"]):
        raise ValidationError("record_id must be 'rec-' and 32 hex digits")
    check_version_fields(body)
    check_summary(body["summary"])
    check_policy(body["policy"])


def index_record(ctx: "ExecContext", record: dict[str, Any], *, remove: bool = False) -> None:
    rid = record["record_id"]
    entries = [("patient", record["patient_id"]), ("hospital", record["hospital_id"]), ("type", record["data_type"])]
    entries += [(f"summary:{k}", str(v)) for k, v in record["summary"].items()]
    index_keys = [keys.index_key(index, value, rid) for index, value in entries]
    ctx.state.put_many_raw(index_keys, None if remove else b"")


def _apply_upload(ctx: "ExecContext", tx: Transaction) -> Any:
    b = tx.body
    physician = ctx.sender_cert
    patient = ctx.user_cert(b["patient_id"])
    if patient is None or patient["role"] != "patient":
        raise TxRejected("unknown_patient", f"{b['patient_id']} is not a registered patient")
    type_level = ctx.genesis.data_type_levels.get(b["data_type"])
    if type_level is None:
        raise TxRejected("bad_type", f"unknown data type {b['data_type']!r}")
    if not satisfies(b["policy"]["level"], type_level):
        raise TxRejected("weak_policy", f"{b['data_type']} needs at least level {type_level}")
    if b["patient_id"] not in b["sealed_keys"]:
        raise TxRejected("bad_keys", "the record version's key must be sealed to the patient")
    record_id = b["record_id"]
    if ctx.state.exists(keys.record_key(record_id)):
        raise TxRejected("duplicate_record", f"record {record_id} already exists")
    # Keys in canonical (sorted) order and every value either a scalar or a part of the
    # strictly decoded body (whose maps are in order already), so the record encodes without
    # ``pack``'s walk; a test checks the bytes equal ``pack(record)``.
    record = {
        "capsule": b["capsule"],
        "cid": b["cid"],
        "created_at_ms": ctx.block_timestamp_ms,
        "data_type": b["data_type"],
        "delegating_key": b["delegating_key"],
        "hospital_id": physician["hospital_id"] if physician else tx.sender,
        "patient_id": b["patient_id"],
        "physician_id": tx.sender,
        "policy": b["policy"],
        "record_id": record_id,
        "sealed_keys": b["sealed_keys"],
        "security_level": b["policy"]["level"],
        "size": b["size"],
        "summary": b["summary"],
        "tx_id": ctx.tx_id.hex(),  # as checked (``tx.tx_id`` would hash the transaction again)
        "updated_at_ms": ctx.block_timestamp_ms,
        "verifying_key": b["verifying_key"],
        "version": 1,
    }
    ctx.state.put_raw(keys.record_key(record_id), pack_ordered(record))
    index_record(ctx, record)
    ctx.emit("record_uploaded", {"record_id": record_id, "patient_id": b["patient_id"], "cid": b["cid"]})
    return {"record_id": record_id}


register_kind(
    TxKind("upload_record", frozenset({"user"}), _check_upload, _apply_upload, roles=frozenset({"physician"}))
)
