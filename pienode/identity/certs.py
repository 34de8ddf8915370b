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


class _Certificate:
    """What both certificates share: a signed body (every field but the signature) in a
    domain of their own, and a strict map form."""

    __slots__ = ()
    DOMAIN = ""

    def body(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        del d["signature"]
        return d

    def signed_by(self, key: PrivateKey) -> Any:
        return type(self)(**{**self.body(), "signature": key.sign(self.DOMAIN, pack(self.body()))})

    def signed_correctly(self, key: PublicKey) -> bool:
        return key.verify(self.DOMAIN, pack(self.body()), self.signature)  # type: ignore[attr-defined]

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.sign_key)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        return cls(**_fields(cls, d))


@dataclass(frozen=True, slots=True)
class NodeCert(_Certificate):
    DOMAIN = NODE_CERT_DOMAIN

    node_id: str
    name: str
    sign_key: bytes
    enc_key: bytes
    host: str
    peer_port: int
    api_url: str
    signature: bytes = b""

    def check(self, ca_key: PublicKey) -> None:
        if not self.signed_correctly(ca_key):
            raise ValidationError(f"certificate of {self.node_id} is not signed by the consortium")


@dataclass(frozen=True, slots=True)
class UserCert(_Certificate):
    DOMAIN = USER_CERT_DOMAIN

    user_id: str
    role: str
    security_level: str
    sign_key: bytes
    enc_key: bytes
    hospital_id: str
    issued_at_ms: int
    signature: bytes = b""

    def check(self, hospital_key: PublicKey) -> None:
        """Raises ValidationError unless well-formed and signed by ``hospital_key``."""
        if self.role not in ROLES:
            raise ValidationError(f"unknown role {self.role!r}")
        if self.security_level not in LEVELS:
            raise ValidationError(f"unknown security level {self.security_level!r}")
        PublicKey.from_bytes(self.sign_key)
        PublicKey.from_bytes(self.enc_key)
        if not self.signed_correctly(hospital_key):
            raise ValidationError(f"certificate of {self.user_id} is not signed by {self.hospital_id}")


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
