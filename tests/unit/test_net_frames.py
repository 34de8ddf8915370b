"""Records and the frame cipher: layout, ordering, and what a bad frame looks like."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pienode.net.frames import (
    HEADER_SIZE,
    KIND_MESSAGE,
    KIND_REQUEST,
    KIND_RESPONSE,
    TAG_SIZE,
    FrameCipher,
    FrameError,
    encode_header,
    iter_record,
    max_payload,
)


def record(*messages: tuple[int, int, int, bytes]) -> bytes:
    return b"".join(encode_header(k, c, r, len(p)) + p for k, c, r, p in messages)


def test_record_round_trip_keeps_order_and_fields():
    msgs = [
        (KIND_MESSAGE, 0, 0, b"pre-prepare"),
        (KIND_REQUEST, 1, 7, b""),
        (KIND_RESPONSE, 2, 2**64 - 1, b"x" * 1000),
    ]
    assert list(iter_record(record(*msgs))) == msgs


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 4]),
            st.integers(0, 255),
            st.integers(0, 2**64 - 1),
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_any_record_round_trips(msgs):
    assert list(iter_record(record(*msgs))) == msgs


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_never_raise_anything_but_frame_error(data):
    try:
        for _ in iter_record(data):
            pass
    except FrameError:
        pass


@pytest.mark.parametrize(
    "bad",
    [
        b"",  # empty record
        encode_header(KIND_MESSAGE, 0, 0, 10) + b"short",  # payload cut short
        record((KIND_MESSAGE, 0, 0, b"ok")) + b"\x00\x00\x00",  # trailing partial header
        encode_header(9, 0, 0, 0),  # unknown kind
    ],
)
def test_malformed_records_are_frame_errors(bad):
    with pytest.raises(FrameError):
        list(iter_record(bad))


def test_max_payload_leaves_room_for_tag_and_header():
    assert max_payload(4 << 20) == (4 << 20) - TAG_SIZE - HEADER_SIZE
    assert max_payload(4 << 20) > 1_000_000 + 64 * 1024  # a 1 MB batch plus its envelope fits


def test_cipher_round_trip_in_order():
    key = os.urandom(32)
    sender, receiver = FrameCipher(key), FrameCipher(key)
    frames = [sender.seal(b"frame %d" % i) for i in range(5)]
    assert [receiver.open(f) for f in frames] == [b"frame %d" % i for i in range(5)]
    assert frames[0] != sender.seal(b"frame 0")  # same plaintext, next counter: new ciphertext


def test_replayed_frame_fails():
    key = os.urandom(32)
    sender, receiver = FrameCipher(key), FrameCipher(key)
    first = sender.seal(b"commit")
    assert receiver.open(first) == b"commit"
    with pytest.raises(FrameError):
        receiver.open(first)


def test_reordered_frame_fails():
    key = os.urandom(32)
    sender, receiver = FrameCipher(key), FrameCipher(key)
    first, second = sender.seal(b"one"), sender.seal(b"two")
    with pytest.raises(FrameError):
        receiver.open(second)
    del first


def test_dropped_frame_fails_the_next():
    key = os.urandom(32)
    sender, receiver = FrameCipher(key), FrameCipher(key)
    sender.seal(b"lost")
    with pytest.raises(FrameError):
        receiver.open(sender.seal(b"after"))


@pytest.mark.parametrize("position", [0, 5, -1])
def test_tampered_byte_fails(position):
    key = os.urandom(32)
    frame = bytearray(FrameCipher(key).seal(b"prepare view=3 seq=9"))
    frame[position] ^= 0x01
    with pytest.raises(FrameError):
        FrameCipher(key).open(bytes(frame))


def test_other_direction_key_fails():
    with pytest.raises(FrameError):
        FrameCipher(os.urandom(32)).open(FrameCipher(os.urandom(32)).seal(b"x"))


def test_short_frame_fails_and_repr_hides_key():
    key = os.urandom(32)
    cipher = FrameCipher(key)
    with pytest.raises(FrameError):
        cipher.open(b"\x00" * (TAG_SIZE - 1))
    assert key.hex() not in repr(cipher)
