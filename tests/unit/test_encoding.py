import pytest

from pienode.encoding import pack, signing_payload, unpack
from pienode.errors import EncodingError


def test_pack_is_canonical_whatever_the_key_order():
    assert pack({"b": 1, "a": [1, b"x", "y"]}) == pack({"a": [1, b"x", "y"], "b": 1})


def test_round_trip_preserves_types():
    obj = {"n": -5, "big": 2**63, "s": "text", "b": b"\x00\xff", "l": [None, True, False], "m": {"k": {}}}
    assert unpack(pack(obj)) == obj


@pytest.mark.parametrize("bad", [1.5, {"k": 0.0}, {1: "x"}, object()])
def test_pack_refuses_floats_and_non_str_keys(bad):
    with pytest.raises(EncodingError):
        pack(bad)


def test_unpack_refuses_non_canonical_and_garbage():
    import msgpack

    unsorted = msgpack.packb({"b": 1, "a": 2})
    with pytest.raises(EncodingError, match="non-canonical"):
        unpack(unsorted)
    with pytest.raises(EncodingError):
        unpack(b"\xc1garbage")
    with pytest.raises(EncodingError):
        unpack(pack([1, 2]) + b"extra")
    with pytest.raises(EncodingError):
        unpack(msgpack.packb(1.25))
    with pytest.raises(EncodingError, match="too large"):
        unpack(b"\x90" * 10, max_bytes=5)


def test_signing_payload_separates_domains():
    assert signing_payload("tx", b"p") != signing_payload("pbft", b"p")
    with pytest.raises(EncodingError):
        signing_payload("a\x00b", b"")


# -- the fast paths against the plain definition ------------------------------------------


def _sorted_copy(obj):
    """The definition the fast paths must match: every map rebuilt in key order."""
    if isinstance(obj, float):
        raise EncodingError("float")
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise EncodingError("key")
        return {k: _sorted_copy(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_sorted_copy(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str, bytes)):
        return obj
    raise EncodingError("type")


def _reference_verdict(data: bytes):
    """("ok", value) if ``data`` re-encodes, through the plain definition, to itself."""
    import msgpack

    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        if msgpack.packb(_sorted_copy(obj), use_bin_type=True) != data:
            return ("refused", None)
    except Exception:
        return ("refused", None)
    return ("ok", obj)


def _verdict(data: bytes):
    try:
        return ("ok", unpack(data))
    except EncodingError:
        return ("refused", None)


@pytest.mark.parametrize("data", [
    b"\xcd\x00\x01",                      # 1 as uint16: a longer int than needed
    b"\xd9\x01a",                         # "a" as str8 instead of fixstr
    b"\xc4\x01a",                         # a lone bin: canonical bytes
    b"\x81\xc4\x01a\x01",                 # a bytes map key
    b"\xde\x00\x01\xa1a\x01",             # map16 for a one-entry map
    b"\xdc\x00\x01\x01",                  # array16 for a one-item array
    b"\x82\xa1a\x01\xa1a\x02",            # a duplicate key
    b"\x82\xa1b\x01\xa1a\x02",            # keys out of order
    b"\x81\xa1a\x82\xa1d\x01\xa1c\x02",   # nested keys out of order
    b"\x91\xcb\x3f\xf4\x00\x00\x00\x00\x00\x00",  # a float64 in a list
    b"\x81\xa1a\xca\x3f\xa0\x00\x00",     # a float32 as a map value
    b"\xd4\x05\x00",                      # an ext type
    b"\xd6\xff\x00\x00\x00\x01",          # a msgpack timestamp
    b"\xc3", b"\xc0", b"\x90", b"\x80",   # true, nil, [], {}: canonical
    b"\xd0\x80",                          # -128 as int8: canonical
    b"\xd1\xff\x80",                      # -128 as int16: not
])
def test_strict_unpack_agrees_with_the_definition(data):
    assert _verdict(data) == _reference_verdict(data)


def test_strict_unpack_agrees_with_the_definition_on_mutated_transactions():
    """Every one-byte change of a real transaction gets the verdict the definition gives."""
    import random

    from pienode.crypto.keys import PrivateKey
    from pienode.ledger.tx import Transaction

    tx = Transaction.create(PrivateKey.generate(), chain_id="c", kind="upload_record", sender="phy-00",
                            timestamp_ms=1, body={"b": {"y": [1, -200, 70000], "x": None}, "a": b"\x00" * 40,
                                                  "s": "text", "t": True})
    data = tx.encode()
    rng = random.Random(7)
    accepted = 0
    for i in range(len(data)):
        for value in {rng.randrange(256), data[i] ^ 1, data[i] + 1 & 0xFF}:
            mutated = data[:i] + bytes([value]) + data[i + 1:]
            verdict = _verdict(mutated)
            assert verdict == _reference_verdict(mutated), (i, value)
            accepted += verdict[0] == "ok"
    assert accepted > 0  # some mutations (inside byte strings) stay canonical


def test_pack_matches_the_definition_and_leaves_its_input_alone():
    from collections import OrderedDict
    from enum import IntEnum

    import msgpack

    class Level(IntEnum):
        HIGH = 3

    obj = {"z": [{"b": 1, "a": (2, 3)}], "a": OrderedDict([("y", Level.HIGH), ("x", b"")]), "m": {}}
    before = repr(obj)
    assert pack(obj) == msgpack.packb(_sorted_copy(obj), use_bin_type=True)
    assert repr(obj) == before


def test_pack_ordered_round_trips_a_strict_decode():
    from pienode.encoding import pack_ordered

    data = pack({"b": [1, {"d": b"x", "c": None}], "a": "s"})
    assert pack_ordered(unpack(data)) == data


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_join_array_and_join_map_equal_packing_the_whole(n):
    from pienode.encoding import join_array, join_map

    items = [{"i": i, "b": b"x"} if i % 2 else i for i in range(n)]
    assert join_array([pack(x) for x in items]) == pack(items)
    if n <= 16:
        m = {f"k{i:02d}"[::-1]: items[i] for i in range(n)}
        assert join_map({k: pack(v) for k, v in m.items()}) == pack(m)
    big = {f"k{i}": i for i in range(n)}
    assert join_map({k: pack(v) for k, v in big.items()}) == pack(big)


@pytest.mark.parametrize("data", [
    b"\x82\xa1a\x01\xc4\x01b\x02",   # a str key, then a bytes key
    b"\x82\xc4\x01a\x01\xa1b\x02",   # a bytes key, then a str key
    b"\x82\xc4\x01a\x01\xc4\x01b\x02",  # bytes keys only, in order
    b"\x91\x81\xc4\x01a\x01",        # a bytes key in a nested map
])
def test_bytes_map_keys_are_refused_however_mixed(data):
    assert _reference_verdict(data) == ("refused", None)
    with pytest.raises(EncodingError, match="keys must be str"):
        unpack(data)


def test_the_reused_packer_gives_fresh_bytes_after_an_error_and_in_every_thread():
    import threading

    import msgpack

    from pienode.encoding import packb

    with pytest.raises(EncodingError):
        pack({"a": [b"x" * 10, 2**80]})  # fails halfway through the packer's buffer
    assert pack({"b": 1, "a": [1]}) == msgpack.packb({"a": [1], "b": 1})
    assert packb(b"y" * (2 << 20)) == msgpack.packb(b"y" * (2 << 20), use_bin_type=True)  # packer dropped after
    assert packb([1, "z"]) == msgpack.packb([1, "z"], use_bin_type=True)
    bad: list[object] = []

    def work(i: int) -> None:
        for j in range(2000):
            value = {"i": i, "j": j, "blob": bytes([i]) * (j % 300)}
            if packb(value) != msgpack.packb(value, use_bin_type=True):
                bad.append((i, j))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
