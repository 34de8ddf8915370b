"""Transactions, execution and the ledger store, without any network."""

from __future__ import annotations

import pytest

from pienode.crypto.keys import PrivateKey
from pienode.errors import EncodingError, ReplayError, StorageError, ValidationError
from pienode.ledger import keys
from pienode.ledger.block import Block
from pienode.ledger.state import StateOverlay
from pienode.ledger.store import Ledger
from pienode.ledger.tx import Transaction
from pienode.ledger.validation import TxCaches, check_transaction
from pienode.storage.kv import MemoryKV, open_kv
from tests.helpers import commit, make_consortium, now_ms, upload_body


@pytest.fixture
def world():
    c = make_consortium(4)
    ledger = Ledger(MemoryKV(), c.genesis)
    b = commit(ledger, [c.register_tx("pat-00000000000000a1", "patient"),
                        c.register_tx("phy-00000000000000b2", "physician", "hospital-2"),
                        c.register_tx("res-00000000000000c3", "researcher", "hospital-3")])
    assert all(r.ok for r in b.receipts), b.receipts
    return c, ledger


def test_transaction_decode_rejects_malformed():
    c = make_consortium(1)
    good = Transaction.create(c.node_keys["hospital-1"], chain_id="x", kind="k", sender="s", timestamp_ms=1, body={})
    assert Transaction.decode(good.encode(), max_bytes=1000) == good
    for bad in (b"", b"garbage", b"\x80", b"\x93\x01\x02\x03"):
        with pytest.raises(EncodingError):
            Transaction.decode(bad, max_bytes=1000)
    with pytest.raises(EncodingError, match="too large"):
        Transaction.decode(good.encode(), max_bytes=10)


def test_register_and_upload_commit_with_indexes(world):
    c, ledger = world
    tx = c.user_tx("phy-00000000000000b2", "upload_record", upload_body("pat-00000000000000a1"))
    b = commit(ledger, [tx.encode()])
    r = b.receipts[0]
    assert r.ok, r
    rid = r.result["record_id"]
    rec = ledger.state(keys.record_key(rid))
    assert rec["patient_id"] == "pat-00000000000000a1" and rec["hospital_id"] == "hospital-2"
    assert ledger.kv.get(keys.STATE + keys.index_key("patient", "pat-00000000000000a1", rid)) == b""
    assert ledger.kv.get(keys.STATE + keys.index_key("summary:disease", "diabetes", rid)) == b""
    assert ledger.tx_height(tx.tx_id) == ledger.height


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda b: b.update(patient_id="pat-ffffffffffffffff"), "unknown_patient"),
        (lambda b: b.update(data_type="medical_imaging", policy={**b["policy"], "level": "low"}), "weak_policy"),
        (lambda b: b.update(sealed_keys={"someone-else": b"x"}), "bad_keys"),
    ],
)
def test_upload_refusals_are_recorded_and_change_nothing(world, mutate, code):
    c, ledger = world
    body = upload_body("pat-00000000000000a1")
    mutate(body)
    before = dict(ledger.kv.iterate(keys.STATE + b"r/"))
    tx = c.user_tx("phy-00000000000000b2", "upload_record", body)
    b = commit(ledger, [tx.encode()])
    assert not b.receipts[0].ok and b.receipts[0].code == code
    assert dict(ledger.kv.iterate(keys.STATE + b"r/")) == before
    # refused but attributable: it cannot be replayed
    assert ledger.tx_height(tx.tx_id) == ledger.height


def test_admission_checks(world):
    c, ledger = world
    caches = TxCaches()
    state = StateOverlay(ledger.kv)

    def check(data: bytes, now: int | None = None):
        return check_transaction(data, genesis=c.genesis, state=state, now_ms=now or now_ms(), caches=caches)

    good = c.user_tx("phy-00000000000000b2", "upload_record", upload_body("pat-00000000000000a1"))
    assert check(good.encode()).tx_id == good.tx_id
    # bad signature: the signature of another transaction
    other = c.user_tx("phy-00000000000000b2", "upload_record", upload_body("pat-00000000000000a1", level="private"))
    forged = Transaction(good.chain_id, good.kind, good.sender, good.timestamp_ms, good.body, other.signature)
    with pytest.raises(ValidationError, match="bad signature"):
        check(forged.encode())
    # role: a researcher may not upload records
    with pytest.raises(ValidationError, match="researcher may not"):
        check(c.user_tx("res-00000000000000c3", "upload_record", upload_body("pat-00000000000000a1")).encode())
    # unknown sender, unknown kind, wrong chain, identifying summary, stale timestamp
    stranger = Transaction.create(PrivateKey(), chain_id=c.genesis.chain_id, kind="upload_record",
                                  sender="phy-0000000000000999", timestamp_ms=now_ms(), body=good.body)
    with pytest.raises(ValidationError, match="not a registered user"):
        check(stranger.encode())
    with pytest.raises(ValidationError, match="unknown transaction kind"):
        check(c.user_tx("phy-00000000000000b2", "steal", {}).encode())
    wrong_chain = Transaction.create(c.users["phy-00000000000000b2"][0], chain_id="other", kind="upload_record",
                                     sender="phy-00000000000000b2", timestamp_ms=now_ms(), body=good.body)
    with pytest.raises(ValidationError, match="chain"):
        check(wrong_chain.encode())
    with pytest.raises(ValidationError, match="identify"):
        check(c.user_tx("phy-00000000000000b2", "upload_record",
                        upload_body("pat-00000000000000a1", summary={"name": "Alice"})).encode())
    with pytest.raises(ValidationError, match="timestamp"):
        check(c.user_tx("phy-00000000000000b2", "upload_record", upload_body("pat-00000000000000a1"),
                        ts=now_ms() - 3_600_000).encode())
    # replay after commit
    commit(ledger, [good.encode()])
    with pytest.raises(ReplayError):
        check(good.encode())


def test_a_node_cannot_register_users_for_another_hospital(world):
    c, ledger = world
    data = c.register_tx("pat-0000000000000d44", "patient", "hospital-2")
    tx = Transaction.decode(data, max_bytes=65536)
    relabeled = Transaction.create(c.node_keys["hospital-1"], chain_id=tx.chain_id, kind=tx.kind,
                                   sender="hospital-1", timestamp_ms=tx.timestamp_ms, body=tx.body)
    b = commit(ledger, [relabeled.encode()])
    assert b.receipts[0].code == "bad_cert"


def test_execution_is_deterministic_across_nodes(world):
    c, _ = world
    txs = [c.register_tx(f"pat-{i:016x}", "patient") for i in range(20)] + [b"junk"]
    ts = now_ms()
    heads = []
    for _ in range(2):
        ledger = Ledger(MemoryKV(), c.genesis)
        heads.append(commit(ledger, txs, ts).encode())
    assert heads[0] == heads[1]


def test_ledger_reopens_and_refuses_foreign_genesis(tmp_path, world):
    c, _ = world
    kv = open_kv(tmp_path / "db")
    ledger = Ledger(kv, c.genesis)
    b = commit(ledger, [c.register_tx("pat-00000000000000e5", "patient")])
    kv.close()
    kv = open_kv(tmp_path / "db")
    again = Ledger(kv, c.genesis)
    assert again.height == 1 and again.head.hash() == b.hash()
    with pytest.raises(StorageError, match="another genesis"):
        Ledger(kv, make_consortium(1).genesis)
    with pytest.raises(StorageError, match="does not extend"):
        again.commit(b, {})
    kv.close()


def test_block_encoding_is_the_canonical_map_of_its_parts(world):
    """Block.encode joins parts encoded once; it must equal packing the whole block."""
    from pienode.encoding import pack
    from pienode.ledger.block import receipts_root

    c, ledger = world
    txs = [c.user_tx("phy-00000000000000b2", "upload_record", upload_body("pat-00000000000000a1")).encode()
           for _ in range(20)] + [b"junk"]
    block = commit(ledger, txs)
    whole = pack({"header": block.header.to_dict(), "txs": list(block.txs),
                  "receipts": [r.to_dict() for r in block.receipts], "cert": block.certificate})
    assert block.encode() == whole
    again = Block.decode(whole)
    assert again.encode() == whole and again == block
    assert receipts_root(again.receipts) == block.header.receipts_root


def test_require_fields_refuses_unknown_missing_and_mistyped_fields():
    from pienode.ledger.tx import require_fields

    spec = {"n": (int, True), "flag": (bool, True), "opt": ((int, type(None)), False), "s": (str, False)}
    require_fields({"n": 1, "flag": False}, spec)
    require_fields({"n": -3, "flag": True, "opt": None, "s": ""}, spec)
    for body, what in [
        ({"n": 1, "flag": True, "extra": 1}, "unknown body fields: extra"),
        ({"flag": True}, "missing body field 'n'"),
        ({"n": True, "flag": True}, "'n' has the wrong type"),     # a bool is not an int here
        ({"n": 1, "flag": 1}, "'flag' has the wrong type"),
        ({"n": 1, "flag": True, "opt": False}, "'opt' has the wrong type"),
        ({"n": 1, "flag": True, "s": b"x"}, "'s' has the wrong type"),
    ]:
        with pytest.raises(ValidationError, match=what):
            require_fields(body, spec)


def test_receipt_and_record_encodings_are_the_canonical_ones(world):
    """Receipts and upload records are encoded from parts without ``pack``'s walk: the bytes
    must still be exactly ``pack`` of the value (what every other node and verify compute)."""
    from pienode.encoding import pack, unpack
    from pienode.ledger.block import Receipt

    c, ledger = world
    body = upload_body("pat-00000000000000a1", summary={"zeta": "z", "alpha": 1, "mid": "m"})
    b = commit(ledger, [c.user_tx("phy-00000000000000b2", "upload_record", body).encode()])
    r = b.receipts[0]
    assert r.ok and r.encode() == pack(r.to_dict())
    raw = ledger.kv.get(keys.STATE + keys.record_key(r.result["record_id"]))
    record = unpack(raw)  # strict: refuses bytes that are not canonical
    assert pack(record) == raw and record["summary"] == {"alpha": 1, "mid": "m", "zeta": "z"}
    odd = Receipt(b"\x01" * 32, False, "rejected", "no", {"z": [1, {"b": 2, "a": b"x"}], "a": None},
                  (("ev", {"y": 1, "x": [True]}), ("ev2", None)))
    assert odd.encode() == pack(odd.to_dict())
    assert ledger.tx_height(b.receipts[0].tx_id) == ledger.height


def test_header_encoding_and_hash_are_made_once_and_cover_every_field(world):
    import dataclasses

    from pienode.encoding import pack, sha256
    from pienode.ledger.block import BlockHeader

    c, ledger = world
    h = ledger.head
    init_fields = {f.name for f in dataclasses.fields(BlockHeader) if f.init}
    assert set(h.to_dict()) == init_fields, "to_dict must list every header field"
    assert h.hash() == sha256(pack(h.to_dict())) == sha256(h.encode())
    other = dataclasses.replace(h, tx_count=h.tx_count + 1)
    assert other.hash() != h.hash() and other != h
    assert BlockHeader(**h.to_dict()) == h and BlockHeader(**h.to_dict()).hash() == h.hash()
    assert Block.decode(ledger.block_raw(ledger.height)).hash() == h.hash()
