"""``decrypt_buffer``: a stream held whole decrypts exactly as ``decrypt_stream`` does it,
chunk for chunk, and fails the same way on every kind of damage (the tampering cases of
``test_crypto_stream`` also run through it, in their ``fails`` helper)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pienode.crypto.stream import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    StreamError,
    decrypt_stream,
    encrypt_bytes,
)
from pienode.crypto.stream_whole import decrypt_buffer
from pienode.errors import CryptoError

KEY = bytes(range(32))
C = 64


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=12 * C))
def test_same_chunks_as_decrypt_stream(data: bytes) -> None:
    ct = encrypt_bytes(KEY, data, C)
    whole = list(decrypt_buffer(KEY, ct))
    assert whole == list(decrypt_stream(KEY, [ct]))
    assert b"".join(whole) == data
    # A memoryview or a bytearray (a receive buffer) decrypts the same.
    assert b"".join(decrypt_buffer(KEY, memoryview(bytearray(ct)))) == data


def test_default_chunks_of_a_1_mb_record() -> None:
    data = os.urandom(1_000_000)
    ct = encrypt_bytes(KEY, data)
    chunks = list(decrypt_buffer(KEY, ct))
    assert [len(c) for c in chunks[:2]] == [DEFAULT_CHUNK_SIZE - HEADER_SIZE, DEFAULT_CHUNK_SIZE]
    assert b"".join(chunks) == data


def test_nothing_is_yielded_from_a_failed_chunk_or_after_it() -> None:
    data = os.urandom(5 * C)
    ct = bytearray(encrypt_bytes(KEY, data, C))
    ct[HEADER_SIZE + (C - HEADER_SIZE + TAG_SIZE) + 3] ^= 1  # inside chunk 1
    chunks = decrypt_buffer(KEY, ct)
    assert next(chunks) == data[: C - HEADER_SIZE]  # chunk 0 authenticated
    with pytest.raises(StreamError, match="failed authentication"):
        next(chunks)
    assert next(chunks, None) is None  # and nothing after the failed one


def test_a_cut_at_a_chunk_boundary_is_named_truncation() -> None:
    ct = encrypt_bytes(KEY, os.urandom(3 * C), C)
    first = HEADER_SIZE + (C - HEADER_SIZE) + TAG_SIZE
    with pytest.raises(StreamError, match="final chunk is missing"):
        list(decrypt_buffer(KEY, ct[: first + C + TAG_SIZE]))


@pytest.mark.parametrize("cut", [0, 1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + TAG_SIZE - 1])
def test_short_streams_fail(cut: int) -> None:
    ct = encrypt_bytes(KEY, b"x" * 10, C)
    with pytest.raises(StreamError):
        list(decrypt_buffer(KEY, ct[:cut]))


def test_bad_key_is_refused() -> None:
    ct = encrypt_bytes(KEY, b"abc", C)
    with pytest.raises(CryptoError):
        list(decrypt_buffer(bytes(31), ct))
