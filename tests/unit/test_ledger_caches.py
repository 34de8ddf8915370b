"""The caches admission and execution share (``TxCaches``): each must give the answer a
fresh check would give, whatever was cached before."""

from __future__ import annotations

import pytest

from pienode.crypto.keys import PrivateKey
from pienode.encoding import pack
from pienode.errors import ReplayError, ValidationError
from pienode.identity.certs import UserCert
from pienode.ledger import keys
from pienode.ledger.state import StateOverlay
from pienode.ledger.store import Ledger
from pienode.ledger.tx import Transaction
from pienode.ledger.validation import CertCache, check_transaction
from pienode.storage.kv import MemoryKV
from tests.helpers import commit, make_consortium, now_ms, upload_body

PHY, PAT = "phy-00000000000000b2", "pat-00000000000000a1"


@pytest.fixture
def world():
    c = make_consortium(4)
    ledger = Ledger(MemoryKV(), c.genesis)
    b = commit(ledger, [c.register_tx(PAT, "patient"), c.register_tx(PHY, "physician", "hospital-2")])
    assert all(r.ok for r in b.receipts), b.receipts
    return c, ledger


def admit(c, ledger: Ledger, data: bytes):
    """Admission as the node does it: committed state, the executor's own caches."""
    return check_transaction(data, genesis=c.genesis, state=StateOverlay(ledger.kv), now_ms=now_ms(),
                             caches=ledger.executor.caches)


def upload(c, **kw) -> Transaction:
    return c.user_tx(PHY, "upload_record", upload_body(PAT), **kw)


def test_a_decoded_transaction_is_reused_until_execution_takes_it(world):
    c, ledger = world
    caches = ledger.executor.caches
    tx = upload(c)
    first = admit(c, ledger, tx.encode())
    assert len(caches.decoded) == 1
    again = admit(c, ledger, tx.encode())
    assert again.tx is first.tx  # the same decoded object: parsed once
    b = commit(ledger, [tx.encode()])
    assert b.receipts[0].ok, b.receipts[0]
    assert len(caches.decoded) == 0


def test_same_id_other_bytes_never_hits_the_cache(world):
    """A second encoding of one transaction id (another signature) is its own entry and
    gets its own signature check, before and after the genuine one was admitted."""
    c, ledger = world
    good = upload(c)
    other = c.user_tx(PHY, "upload_record", upload_body(PAT))
    forged = Transaction(good.chain_id, good.kind, good.sender, good.timestamp_ms, good.body, other.signature)
    assert forged.tx_id == good.tx_id and forged.encode() != good.encode()
    admit(c, ledger, good.encode())
    with pytest.raises(ValidationError, match="bad signature"):
        admit(c, ledger, forged.encode())
    b = commit(ledger, [forged.encode(), good.encode()])
    assert [r.code for r in b.receipts] == ["invalid", "ok"]
    assert "bad signature" in b.receipts[0].error


def test_a_transaction_admitted_earlier_is_still_refused_when_invalid_at_execution(world):
    c, ledger = world
    skew = c.genesis.params.max_clock_skew_ms
    stale, replayed = upload(c, ts=now_ms() - skew // 2 - 1000), upload(c)
    for tx in (stale, replayed):
        admit(c, ledger, tx.encode())
    # The block's timestamp puts ``stale`` out of the skew window; ``replayed`` commits.
    b = commit(ledger, [stale.encode(), replayed.encode()], ts=now_ms() + skew // 2 + 1000)
    assert [r.code for r in b.receipts] == ["invalid", "ok"]
    assert "timestamp" in b.receipts[0].error
    # Admitted again (cached again) and ordered again: refused as a replay, nothing written.
    with pytest.raises(ReplayError):
        admit(c, ledger, replayed.encode())
    before = dict(ledger.kv.iterate(keys.STATE))
    b = commit(ledger, [replayed.encode()])
    assert b.receipts[0].code == "invalid" and "already committed" in b.receipts[0].error
    assert dict(ledger.kv.iterate(keys.STATE)) == before


def commit_state(ledger: Ledger, writes: dict[bytes, bytes | None]) -> None:
    """Commit a block (no transactions) that also writes ``writes`` to state: how a later
    block's state change reaches the store, through ``Ledger.commit`` like any other."""
    block, own = ledger.executor.execute(ledger.head, (), timestamp_ms=now_ms(), proposer="hospital-1", view=0,
                                         batch_digest=b"d" * 32)
    ledger.commit(block, {**own, **writes})


def replace_cert(c, ledger: Ledger, user_id: str, role: str | None = None) -> PrivateKey:
    """Commit a new certificate for ``user_id`` (a rotated key, or another role), as a later
    block would."""
    _, old = c.users[user_id]
    key = PrivateKey.generate()
    cert = UserCert(user_id, role or old.role, old.security_level, key.public_key.data, old.enc_key,
                    old.hospital_id, now_ms()).signed_by(c.node_keys[old.hospital_id])
    commit_state(ledger, {keys.user_key(user_id): pack(cert.to_dict())})
    c.users[user_id] = (key, cert)
    return key


def test_a_rotated_certificate_is_not_served_stale(world):
    c, ledger = world
    signed_with_old_key = upload(c)
    admit(c, ledger, signed_with_old_key.encode())
    replace_cert(c, ledger, PHY)
    with pytest.raises(ValidationError, match="bad signature"):
        admit(c, ledger, signed_with_old_key.encode())
    b = commit(ledger, [signed_with_old_key.encode(), upload(c).encode()])
    assert [r.code for r in b.receipts] == ["invalid", "ok"]


def test_a_changed_role_or_a_removed_certificate_is_seen_at_once(world):
    c, ledger = world
    tx = upload(c)
    admit(c, ledger, tx.encode())
    key = replace_cert(c, ledger, PHY, role="researcher")
    by_researcher = Transaction.create(key, chain_id=tx.chain_id, kind=tx.kind, sender=PHY,
                                       timestamp_ms=now_ms(), body=upload_body(PAT))
    with pytest.raises(ValidationError, match="researcher may not"):
        admit(c, ledger, by_researcher.encode())
    commit_state(ledger, {keys.user_key(PHY): None})
    with pytest.raises(ValidationError, match="not a registered user"):
        admit(c, ledger, by_researcher.encode())
    b = commit(ledger, [by_researcher.encode()])
    assert b.receipts[0].code == "invalid" and "not a registered user" in b.receipts[0].error


def test_cert_cache_reads_the_block_overlay_and_hands_out_copies(world):
    c, ledger = world
    certs = CertCache()
    state = StateOverlay(ledger.kv)
    cert, key = certs.lookup(state, PHY)
    assert cert["role"] == "physician" and key.data == c.users[PHY][1].sign_key
    cert["role"] = "tampered"
    assert certs.lookup(state, PHY)[0]["role"] == "physician"
    # A write earlier in the same block is what the next transaction sees.
    state.delete(keys.user_key(PHY))
    assert certs.lookup(state, PHY) is None
    assert certs.lookup(StateOverlay(ledger.kv), PHY) is not None


def test_caches_are_bounded():
    from pienode.ledger.validation import DecodedCache, SignatureCache

    c = make_consortium(1)
    decoded = DecodedCache(size=3)
    for i in range(10):
        tx = Transaction.create(c.node_keys["hospital-1"], chain_id=c.genesis.chain_id, kind="register_user",
                                sender="hospital-1", timestamp_ms=i, body={"cert": {}})
        with pytest.raises(ValidationError):
            decoded.decode(tx.encode(), c.genesis)  # the body check fails: nothing cached
    assert len(decoded) == 0
    for i in range(10):
        tx = Transaction.create(c.node_keys["hospital-1"], chain_id=c.genesis.chain_id, kind="record_access",
                                sender="hospital-1", timestamp_ms=i, body={"record_id": "r"})
        decoded.decode(tx.encode(), c.genesis)
    assert len(decoded) == 3
    sigs = SignatureCache(size=2)
    key = c.node_keys["hospital-1"]
    for i in range(5):
        tx = Transaction.create(key, chain_id="x", kind="k", sender="s", timestamp_ms=i, body={})
        assert sigs.check(key.public_key, tx, tx.tx_id)
    assert len(sigs._seen) == 2


def test_execution_without_admission_gives_the_same_block():
    """A replica that never admitted a transaction (it missed the gossip) decodes it at
    execution and must reach the same block as one that admitted it."""
    c = make_consortium(4)
    base = [c.register_tx(PAT, "patient"), c.register_tx(PHY, "physician", "hospital-2")]
    ts = now_ms()
    txs = [upload(c, ts=ts).encode() for _ in range(5)] + [b"junk"]
    blocks = []
    for warm in (True, False):
        ledger = Ledger(MemoryKV(), c.genesis)
        commit(ledger, base, ts=ts)
        if warm:
            for data in txs[:-1]:
                admit(c, ledger, data)
        blocks.append(commit(ledger, txs, ts=ts + 1))
    assert [r.code for r in blocks[0].receipts] == ["ok"] * 5 + ["invalid"]
    assert blocks[0].encode() == blocks[1].encode()


class CountingKV(MemoryKV):
    """A store that counts reads and can run a hook in the middle of one."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[bytes, int] = {}
        self.during_read = None

    def get(self, key: bytes) -> bytes | None:
        self.reads[key] = self.reads.get(key, 0) + 1
        value = super().get(key)
        hook, self.during_read = self.during_read, None
        if hook is not None:
            hook()
        return value


def counting_world():
    c = make_consortium(4)
    ledger = Ledger(CountingKV(), c.genesis)
    commit(ledger, [c.register_tx(PAT, "patient"), c.register_tx(PHY, "physician", "hospital-2")])
    return c, ledger


def test_a_committed_certificate_is_read_from_the_store_once():
    c, ledger = counting_world()
    stored = keys.STATE + keys.user_key(PHY)
    ledger.kv.reads.clear()
    for _ in range(5):
        admit(c, ledger, upload(c).encode())
    b = commit(ledger, [upload(c).encode() for _ in range(3)])
    assert all(r.ok for r in b.receipts)
    assert ledger.kv.reads.get(stored) == 1


def test_a_lookup_racing_a_commit_does_not_cache_the_old_certificate():
    """Admission read the old certificate from the store, then a block replaced it before
    the lookup finished: the old one must not stay cached."""
    c, ledger = counting_world()
    signed_with_old_key = upload(c)
    ledger.kv.during_read = lambda: replace_cert(c, ledger, PHY)
    admit(c, ledger, signed_with_old_key.encode())  # checked against what it read: passes
    with pytest.raises(ValidationError, match="bad signature"):
        admit(c, ledger, signed_with_old_key.encode())
    assert admit(c, ledger, upload(c).encode()).sender_cert["sign_key"] == c.users[PHY][1].sign_key


def test_a_certificate_written_earlier_in_the_block_is_used_and_not_cached(world):
    c, ledger = world
    certs = ledger.executor.caches.certs
    state = StateOverlay(ledger.kv)
    assert certs.lookup(state, PHY) is not None and len(certs) == 1
    _, old = c.users[PHY]
    new_key = PrivateKey.generate().public_key.data
    cert = UserCert(PHY, old.role, old.security_level, new_key, old.enc_key, old.hospital_id,
                    now_ms()).signed_by(c.node_keys[old.hospital_id])
    state.put(keys.user_key(PHY), cert.to_dict())
    assert certs.lookup(state, PHY)[1].data == new_key
    # The block was not committed: everyone else still gets the committed certificate.
    assert certs.lookup(StateOverlay(ledger.kv), PHY)[1].data == old.sign_key


def test_a_block_drops_the_certificates_it_writes_whichever_side_is_smaller(world):
    """Invalidation walks either the cached users or the block's keys: both must drop
    exactly the certificates the block wrote."""
    c, ledger = world
    certs = ledger.executor.caches.certs
    for user in (PHY, PAT):
        assert certs.lookup(StateOverlay(ledger.kv), user) is not None
    assert len(certs) == 2
    replace_cert(c, ledger, PHY)  # one key written, two users cached
    assert len(certs) == 1 and certs.lookup(StateOverlay(ledger.kv), PHY)[1].data == c.users[PHY][1].sign_key
    many = {keys.record_key(f"rec-{i:032x}"): b"x" for i in range(5)}
    _, old = c.users[PAT]
    new = UserCert(PAT, old.role, old.security_level, PrivateKey.generate().public_key.data, old.enc_key,
                   old.hospital_id, now_ms()).signed_by(c.node_keys[old.hospital_id])
    commit_state(ledger, {**many, keys.user_key(PAT): pack(new.to_dict())})  # more keys than users
    assert certs.lookup(StateOverlay(ledger.kv), PAT)[1].data == new.sign_key
    assert certs.lookup(StateOverlay(ledger.kv), PHY)[1].data == c.users[PHY][1].sign_key
