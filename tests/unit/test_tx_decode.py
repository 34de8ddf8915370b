"""``Transaction.decode`` cuts the unsigned encoding out of the wire bytes: it must be
exactly what encoding the unsigned map gives, for every size of every field."""

from __future__ import annotations

import os

import pytest

from pienode.crypto.keys import PrivateKey
from pienode.encoding import pack
from pienode.errors import EncodingError
from pienode.ledger.tx import Transaction, _unsigned_of

KEY = PrivateKey.generate()
STAMPS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 1_795_334_000_000, 2**64 - 1]
BODIES = [{}, {"a": 1}, {"x": os.urandom(300)}, {"z": "y" * 70_000}]


@pytest.mark.parametrize("ts", STAMPS)
def test_the_unsigned_bytes_and_id_match_a_fresh_encoding(ts):
    for body in BODIES:
        tx = Transaction.create(KEY, chain_id="c", kind="k", sender="s", timestamp_ms=ts, body=body)
        got = Transaction.decode(tx.encode(), max_bytes=1 << 20)
        assert got.unsigned_bytes() == pack(tx.unsigned())
        assert got.tx_id == tx.tx_id and got == tx
        assert _unsigned_of(tx.encode(), ts, tx.signature) == pack(tx.unsigned())  # the cut, not the fallback


@pytest.mark.parametrize("size", [0, 1, 64, 255, 256, 65535, 65536])
def test_any_signature_length_gives_the_same_unsigned_bytes(size):
    tx = Transaction("c", "k", "s", 1_795_334_000_000, {"a": b"b"}, b"\x07" * size)
    got = Transaction.decode(tx.encode(), max_bytes=1 << 20)
    assert got.unsigned_bytes() == pack(tx.unsigned()) and got.signature == tx.signature
    assert _unsigned_of(tx.encode(), tx.timestamp_ms, tx.signature) == got.unsigned_bytes()


def test_a_non_canonical_transaction_is_still_refused():
    wire = Transaction.create(KEY, chain_id="c", kind="k", sender="s", timestamp_ms=5, body={}).encode()
    longer_ts = wire.replace(b"\xa2ts\x05", b"\xa2ts\xcc\x05")  # 5 as a uint8: valid msgpack, not canonical
    assert longer_ts != wire
    with pytest.raises(EncodingError):
        Transaction.decode(longer_ts, max_bytes=1 << 20)
