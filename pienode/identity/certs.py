"""Certificates: the consortium signs hospital (node) certificates in genesis; a hospital
signs the certificates of the users it registers.

A certificate carries public keys only: a signing key (secp256k1 ECDSA) and an encryption
key (secp256k1 point used by Umbral proxy re-encryption). User certificates name a random
pseudonymous user id, a role and the certified security level, never a person.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pienode.crypto.keys import PrivateKey, PublicKey
from pienode.encoding import pack
from pienode.errors import ValidationError
from pienode.identity.levels import LEVELS, ROLES

NODE_CERT_DOMAIN = "node-cert"
USER_CERT_DOMAIN = "user-cert"


@dataclass(frozen=True, slots=True)
class NodeCert:
    node_id: str
    name: str
    sign_key: bytes
    enc_key: bytes
    host: str
    peer_port: int
    api_url: str
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        del d["signature"]
        return d

    def signed_by(self, ca: PrivateKey) -> "NodeCert":
        sig = ca.sign(NODE_CERT_DOMAIN, pack(self.body()))
        return NodeCert(**{**self.body(), "signature": sig})

    def check(self, ca_key: PublicKey) -> None:
        if not ca_key.verify(NODE_CERT_DOMAIN, pack(self.body()), self.signature):
            raise ValidationError(f"certificate of {self.node_id} is not signed by the consortium")

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.sign_key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NodeCert":
        return cls(**_fields(cls, d))


@dataclass(frozen=True, slots=True)
class UserCert:
    user_id: str
    role: str
    security_level: str
    sign_key: bytes
    enc_key: bytes
    hospital_id: str
    issued_at_ms: int
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        del d["signature"]
        return d

    def signed_by(self, hospital_key: PrivateKey) -> "UserCert":
        sig = hospital_key.sign(USER_CERT_DOMAIN, pack(self.body()))
        return UserCert(**{**self.body(), "signature": sig})

    def check(self, hospital_key: PublicKey) -> None:
        """Raises ValidationError unless well-formed and signed by ``hospital_key``."""
        if self.role not in ROLES:
            raise ValidationError(f"unknown role {self.role!r}")
        if self.security_level not in LEVELS:
            raise ValidationError(f"unknown security level {self.security_level!r}")
        PublicKey.from_bytes(self.sign_key)
        PublicKey.from_bytes(self.enc_key)
        if not hospital_key.verify(USER_CERT_DOMAIN, pack(self.body()), self.signature):
            raise ValidationError(f"certificate of {self.user_id} is not signed by {self.hospital_id}")

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.sign_key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UserCert":
        return cls(**_fields(cls, d))


def _fields(cls: type, d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ValidationError(f"{cls.__name__} must be a map")
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = set(d) - set(names)
    if unknown:
        raise ValidationError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    out: dict[str, Any] = {}
    for name, field in names.items():
        if name not in d:
            if name == "signature":
                raise ValidationError(f"{cls.__name__}: missing signature")
            raise ValidationError(f"{cls.__name__}: missing field {name}")
        v = d[name]
        want = field.type
        ok = {
            "str": isinstance(v, str),
            "bytes": isinstance(v, bytes),
            "int": isinstance(v, int) and not isinstance(v, bool),
        }.get(want, True)
        if not ok:
            raise ValidationError(f"{cls.__name__}.{name} must be {want}")
        out[name] = v
    return out
