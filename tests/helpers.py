"""Test helpers: small consortia and signed transactions without any I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pienode.crypto.keys import PrivateKey
from pienode.identity.certs import NodeCert, UserCert
from pienode.identity.genesis import Genesis
from pienode.ledger.tx import Transaction

if TYPE_CHECKING:
    from pienode.ledger.block import Block
    from pienode.ledger.store import Ledger


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Consortium:
    ca: PrivateKey
    node_keys: dict[str, PrivateKey]
    genesis: Genesis
    users: dict[str, tuple[PrivateKey, UserCert]] = field(default_factory=dict)

    def register_tx(self, user_id: str, role: str, hospital: str = "hospital-1", level: str | None = None) -> bytes:
        key = PrivateKey.generate()
        cert = UserCert(
            user_id, role, level or self.genesis.role_levels[role], key.public_key.data,
            PrivateKey.generate().public_key.data, hospital, now_ms(),
        ).signed_by(self.node_keys[hospital])
        self.users[user_id] = (key, cert)
        return Transaction.create(
            self.node_keys[hospital], chain_id=self.genesis.chain_id, kind="register_user", sender=hospital,
            timestamp_ms=now_ms(), body={"cert": cert.to_dict()},
        ).encode()

    def user_tx(self, user_id: str, kind: str, body: dict, ts: int | None = None) -> Transaction:
        key, _ = self.users[user_id]
        return Transaction.create(key, chain_id=self.genesis.chain_id, kind=kind, sender=user_id,
                                  timestamp_ms=ts if ts is not None else now_ms(), body=body)


def make_consortium(n: int = 4) -> Consortium:
    ca = PrivateKey.generate()
    keys = {f"hospital-{i + 1}": PrivateKey.generate() for i in range(n)}
    certs = tuple(
        NodeCert(nid, nid.title(), k.public_key.data, PrivateKey.generate().public_key.data, "127.0.0.1",
                 9000 + i, f"http://127.0.0.1:{8000 + i}").signed_by(ca)
        for i, (nid, k) in enumerate(keys.items())
    )
    genesis = Genesis("pie-test", now_ms(), ca.public_key.data, certs)
    return Consortium(ca, keys, genesis)


def upload_body(patient_id: str, *, data_type: str = "omics", level: str = "low", summary: dict | None = None) -> dict:
    import secrets

    return {
        "record_id": "rec-" + secrets.token_hex(16),
        "patient_id": patient_id,
        "data_type": data_type,
        "summary": summary if summary is not None else {"disease": "diabetes", "age_band": "40-49"},
        "cid": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        "size": 1234,
        "capsule": b"\x01" * 98,
        "delegating_key": PrivateKey.generate().public_key.data,
        "verifying_key": PrivateKey.generate().public_key.data,
        "sealed_keys": {patient_id: b"sealed"},
        "policy": {"level": level, "roles": None, "purposes": None, "expires_at_ms": None},
    }


def commit(ledger: "Ledger", txs: list[bytes], ts: int | None = None) -> "Block":
    """Execute ``txs`` as the next block on ``ledger`` and commit it."""
    block, writes = ledger.executor.execute(
        ledger.head, tuple(txs), timestamp_ms=ts or now_ms(), proposer="hospital-1", view=0, batch_digest=b"d" * 32
    )
    ledger.commit(block, writes)
    return block
