"""Checks a transaction must pass before it is admitted, and again when executed.

Order: size and encoding, chain id, kind and body schema, sender resolution (hospital node,
consortium, or a user certified on chain), role permission, signature, timestamp bounds,
replay. Admission uses the node's clock; execution uses the block's timestamp, so the
execution-time verdict is the same on every node.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pienode.crypto.keys import PublicKey
from pienode.errors import PieError, ReplayError, ValidationError
from pienode.identity.genesis import Genesis
from pienode.ledger import keys
from pienode.ledger.kinds import TxKind, kind_of
from pienode.ledger.state import StateOverlay
from pienode.ledger.tx import TX_DOMAIN, Transaction

CONSORTIUM = "consortium"


class SignatureCache:
    """Remembers (tx id, signature) pairs already verified: a pure function of the bytes,
    so caching is safe, and each node then verifies a transaction once, not twice."""

    def __init__(self, size: int = 200_000) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def check(self, key: PublicKey, tx: Transaction, tx_id: bytes) -> bool:
        token = tx_id + tx.signature + key.data
        if token in self._seen:
            return True
        if not key.verify(TX_DOMAIN, tx.unsigned_bytes(), tx.signature):
            return False
        self._seen[token] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True)
class Checked:
    tx: Transaction
    tx_id: bytes
    kind: TxKind
    sender_cert: dict[str, Any] | None


def check_transaction(
    data: bytes,
    *,
    genesis: Genesis,
    state: StateOverlay,
    now_ms: int,
    sigs: SignatureCache,
) -> Checked:
    """Validate wire bytes against the state in ``state``.

    Raises:
        EncodingError, ValidationError, ReplayError: with a message for the submitter.
    """
    tx = Transaction.decode(data, max_bytes=genesis.params.max_tx_bytes)
    if tx.chain_id != genesis.chain_id:
        raise ValidationError(f"transaction is for chain {tx.chain_id!r}, not {genesis.chain_id!r}")
    kind = kind_of(tx)
    kind.check_body(tx.body)
    sender_cert: dict[str, Any] | None = None
    if tx.sender == CONSORTIUM:
        sender_class, key = "consortium", PublicKey(genesis.consortium_key)
    elif genesis.has_node(tx.sender):
        sender_class, key = "node", genesis.node(tx.sender).public_key
    else:
        sender_class = "user"
        sender_cert = state.get(keys.user_key(tx.sender))
        if sender_cert is None:
            raise ValidationError(f"sender {tx.sender!r} is not a registered user")
        key = PublicKey(sender_cert["sign_key"])
    if sender_class not in kind.senders:
        raise ValidationError(f"a {sender_class} may not send {tx.kind} transactions")
    if sender_cert is not None and kind.roles is not None and sender_cert["role"] not in kind.roles:
        raise ValidationError(f"a {sender_cert['role']} may not send {tx.kind} transactions")
    tx_id = tx.tx_id
    if not sigs.check(key, tx, tx_id):
        raise ValidationError("bad signature")
    skew = genesis.params.max_clock_skew_ms
    if abs(tx.timestamp_ms - now_ms) > skew:
        raise ValidationError(f"transaction timestamp is more than {skew // 1000} s from the node's clock")
    if state.exists(keys.tx_key(tx_id)):
        raise ReplayError("transaction already committed", tx_id=tx_id.hex())
    return Checked(tx, tx_id, kind, sender_cert)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, PieError) and 400 <= exc.status < 500
