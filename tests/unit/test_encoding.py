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
