"""Checks a transaction must pass before it is admitted, and again when executed.

Order: size and encoding, chain id, kind and body schema, sender resolution (hospital node,
consortium, or a user certified on chain), role permission, signature, timestamp bounds,
replay. Admission uses the node's clock; execution uses the block's timestamp, so the
execution-time verdict is the same on every node.

A node checks each transaction twice (admission, execution) and runs the same checks on
the same bytes in every block, so ``TxCaches`` keeps what is a pure function of bytes:
the decoded transaction (by the hash of its wire bytes) and verified signatures. The
decoded sender certificates of committed state are cached by user id and dropped by the
ledger when a block writes them. Nothing that depends on the clock is cached, and the role,
timestamp and replay checks always run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Collection

from pienode.crypto.keys import PublicKey
from pienode.encoding import sha256, unpack
from pienode.errors import PieError, ReplayError, ValidationError
from pienode.identity.genesis import Genesis
from pienode.ledger import keys
from pienode.ledger.kinds import TxKind, kind_of
from pienode.ledger.state import StateOverlay
from pienode.ledger.tx import TX_DOMAIN, Transaction

CONSORTIUM = "consortium"


class _Bounded:
    """A FIFO-bounded map shared by the event loop (admission) and the execution thread,
    so every access holds a lock (uncontended: well under a microsecond)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> Any:
        with self._lock:
            return self._items.get(key)

    def pop(self, key: bytes) -> Any:
        with self._lock:
            return self._items.pop(key, None)

    def put(self, key: bytes, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class SignatureCache:
    """Remembers (tx id, signature, key) triples already verified: a pure function of the
    bytes, so caching is safe, and each node then verifies a transaction once, not twice."""

    def __init__(self, size: int = 200_000) -> None:
        self._seen = _Bounded(size)

    def check(self, key: PublicKey, tx: Transaction, tx_id: bytes) -> bool:
        token = tx_id + tx.signature + key.data
        if self._seen.get(token) is not None:
            return True
        if not key.verify(TX_DOMAIN, tx.unsigned_bytes(), tx.signature):
            return False
        self._seen.put(token, True)
        return True


@dataclass(frozen=True, slots=True)
class Decoded:
    """What the wire bytes alone (with genesis) decide: the parsed transaction, its id and
    its kind, after the chain id and body schema checks."""

    tx: Transaction
    tx_id: bytes
    kind: TxKind


class DecodedCache:
    """Decoded transactions by the SHA-256 of their exact wire bytes, from admission to
    execution, so a node parses and schema-checks each transaction once.

    Keyed by the hash of all the bytes (signature included), never by the transaction id:
    two encodings with one id (another signature) are two entries. Only the checks that
    depend on nothing but the bytes and genesis are skipped on a hit; the sender, role,
    signature, timestamp and replay checks run every time. Execution takes its entry out
    (it is not needed again); entries of transactions never ordered fall off the end.
    """

    def __init__(self, size: int = 20_000) -> None:
        self._items = _Bounded(size)

    def __len__(self) -> int:
        return len(self._items)

    def decode(self, data: bytes, genesis: Genesis, *, take: bool = False) -> Decoded:
        """The ``Decoded`` of ``data``, from the cache or parsed and checked now.

        Args:
            take: drop the entry (execution: the transaction will not be checked again).

        Raises:
            EncodingError, ValidationError: as ``decode_transaction``.
        """
        key = sha256(data)
        hit = self._items.pop(key) if take else self._items.get(key)
        if hit is not None:
            return hit
        decoded = decode_transaction(data, genesis)
        if not take:
            self._items.put(key, decoded)
        return decoded


def decode_transaction(data: bytes, genesis: Genesis) -> Decoded:
    """Parse ``data`` and run the checks that depend only on it and genesis.

    Raises:
        EncodingError, ValidationError: with a message for the submitter.
    """
    tx = Transaction.decode(data, max_bytes=genesis.params.max_tx_bytes)
    if tx.chain_id != genesis.chain_id:
        raise ValidationError(f"transaction is for chain {tx.chain_id!r}, not {genesis.chain_id!r}")
    kind = kind_of(tx)
    kind.check_body(tx.body)
    return Decoded(tx, tx.tx_id, kind)


class CertCache:
    """Decoded user certificates of committed state, by user id, so admission and execution
    do not read and decode the sender's certificate for every transaction.

    The ledger is the only writer of committed state: ``Ledger.commit`` calls ``written``
    with the keys of each block right after its synced write, and that drops every
    certificate the block wrote (added, replaced or removed), so the next lookup reads the
    new one. A lookup that read the store while a block was being committed may hold the
    old bytes: a generation counter, bumped by ``written``, keeps it from caching them. A
    block being executed sees its own earlier writes first (the overlay), never the cache.
    Callers get their own copy of the certificate map.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._by_user: OrderedDict[str, tuple[dict[str, Any], PublicKey]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._by_user)

    def lookup(self, state: StateOverlay, user_id: str) -> tuple[dict[str, Any], PublicKey] | None:
        """(certificate, its signing key) of a registered user, or None."""
        key = keys.user_key(user_id)
        writes = state.writes
        if key in writes:  # written earlier in this block: not committed, never cached
            raw = writes[key]
            if raw is None:
                return None
            cert = unpack(raw)
            return cert, PublicKey(cert["sign_key"])
        with self._lock:
            hit = self._by_user.get(user_id)
            generation = self._generation
        if hit is None:
            raw = state.get_raw(key)
            if raw is None:
                return None
            cert = unpack(raw)
            hit = (cert, PublicKey(cert["sign_key"]))
            with self._lock:
                if generation == self._generation:  # no block committed since we read
                    self._by_user[user_id] = hit
                    if len(self._by_user) > self._size:
                        self._by_user.popitem(last=False)
        return dict(hit[0]), hit[1]

    def written(self, state_keys: Collection[bytes]) -> None:
        """Committed state keys ``state_keys`` were just written (put or deleted)."""
        with self._lock:
            self._generation += 1
            cached = self._by_user
            # Walk the smaller side: a block writes hundreds of keys, few users are cached
            # (and a busy node's many cached users face a small block).
            if len(cached) <= len(state_keys):
                stale = [u for u in cached if keys.user_key(u) in state_keys]
            else:
                n = len(keys.USER_PREFIX)
                stale = [k[n:].decode(errors="replace") for k in state_keys if k.startswith(keys.USER_PREFIX)]
            for user_id in stale:
                cached.pop(user_id, None)


class TxCaches:
    """The caches one node's admission and execution share (each a pure function of bytes)."""

    def __init__(self) -> None:
        self.sigs = SignatureCache()
        self.decoded = DecodedCache()
        self.certs = CertCache()

    def state_written(self, state_keys: Collection[bytes]) -> None:
        """The ledger committed writes to ``state_keys``: drop what they make stale."""
        self.certs.written(state_keys)


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
    caches: TxCaches,
    executing: bool = False,
) -> Checked:
    """Validate wire bytes against the state in ``state``.

    Args:
        executing: the check of a transaction being executed in a block (its cached decode
            is used up); False for admission.

    Raises:
        EncodingError, ValidationError, ReplayError: with a message for the submitter.
    """
    decoded = caches.decoded.decode(data, genesis, take=executing)
    tx, tx_id, kind = decoded.tx, decoded.tx_id, decoded.kind
    sender_cert: dict[str, Any] | None = None
    if tx.sender == CONSORTIUM:
        sender_class, key = "consortium", PublicKey(genesis.consortium_key)
    elif genesis.has_node(tx.sender):
        sender_class, key = "node", genesis.node(tx.sender).public_key
    else:
        sender_class = "user"
        found = caches.certs.lookup(state, tx.sender)
        if found is None:
            raise ValidationError(f"sender {tx.sender!r} is not a registered user")
        sender_cert, key = found
    if sender_class not in kind.senders:
        raise ValidationError(f"a {sender_class} may not send {tx.kind} transactions")
    if sender_cert is not None and kind.roles is not None and sender_cert["role"] not in kind.roles:
        raise ValidationError(f"a {sender_cert['role']} may not send {tx.kind} transactions")
    if not caches.sigs.check(key, tx, tx_id):
        raise ValidationError("bad signature")
    skew = genesis.params.max_clock_skew_ms
    if abs(tx.timestamp_ms - now_ms) > skew:
        raise ValidationError(f"transaction timestamp is more than {skew // 1000} s from the node's clock")
    if state.exists(keys.tx_key(tx_id)):
        raise ReplayError("transaction already committed", tx_id=tx_id.hex())
    return Checked(tx, tx_id, kind, sender_cert)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, PieError) and 400 <= exc.status < 500
