"""STREAM AES-256-GCM: round trips, constant memory, and every tampering case fails."""

from __future__ import annotations

import hashlib
import os
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pienode.crypto import stream as s
from pienode.crypto.stream import (
    HEADER_SIZE,
    TAG_SIZE,
    StreamDecryptor,
    StreamEncryptor,
    StreamError,
    ciphertext_size,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    encrypt_stream,
    plaintext_size,
)
from pienode.errors import CryptoError

KEY = bytes(range(32))
C = 64  # small chunks so that tests cross many chunk boundaries cheaply


def pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        yield data[i : i + n]
        i += n
        k += 1


def split_chunks(ct: bytes, chunk_size: int = C) -> tuple[bytes, list[bytes]]:
    """Split a whole encrypted stream into header and ciphertext chunks."""
    full = chunk_size + TAG_SIZE
    body = ct[HEADER_SIZE:]
    return ct[:HEADER_SIZE], [body[i : i + full] for i in range(0, len(body), full)]


def fails(ct: bytes, key: bytes = KEY) -> None:
    with pytest.raises(StreamError):
        decrypt_bytes(key, ct)
    # The same bytes fed one at a time must fail the same way.
    with pytest.raises(StreamError):
        list(decrypt_stream(key, (ct[i : i + 1] for i in range(len(ct)))))


@pytest.mark.parametrize("n", [0, 1, C - 1, C, C + 1, 2 * C, 3 * C - 1, 5 * C, 1000])
def test_round_trip_sizes(n: int) -> None:
    data = os.urandom(n)
    ct = encrypt_bytes(KEY, data, C)
    assert len(ct) == ciphertext_size(n, C)
    assert plaintext_size(len(ct), C) == n
    assert decrypt_bytes(KEY, ct) == data
    assert data == b"" or data not in ct


def test_empty_input_is_one_final_empty_chunk() -> None:
    ct = encrypt_bytes(KEY, b"", C)
    assert len(ct) == HEADER_SIZE + TAG_SIZE
    assert list(decrypt_stream(KEY, [ct])) == [b""]
    assert b"".join(decrypt_stream(KEY, [ct[:HEADER_SIZE], ct[HEADER_SIZE:]])) == b""


def test_default_chunk_size_makes_256_kib_ciphertext_chunks() -> None:
    data = os.urandom(3 * s.DEFAULT_CHUNK_SIZE + 5)
    out = list(encrypt_stream(KEY, [data]))
    assert [len(x) for x in out] == [HEADER_SIZE, 262144, 262144, 262144, 5 + TAG_SIZE]
    assert b"".join(decrypt_stream(KEY, out)) == data


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=700),
    in_sizes=st.lists(st.integers(1, 200), min_size=1, max_size=8),
    out_sizes=st.lists(st.integers(1, 200), min_size=1, max_size=8),
)
def test_any_rechunking_round_trips(data: bytes, in_sizes: list[int], out_sizes: list[int]) -> None:
    ct = b"".join(encrypt_stream(KEY, pieces(data, in_sizes), C))
    assert ct[HEADER_SIZE:] != b"" and len(ct) == ciphertext_size(len(data), C)
    assert b"".join(decrypt_stream(KEY, pieces(ct, out_sizes))) == data


def test_empty_pieces_are_ignored() -> None:
    data = os.urandom(3 * C)
    ct = b"".join(encrypt_stream(KEY, [b"", data[:10], b"", data[10:], b""], C))
    assert b"".join(decrypt_stream(KEY, [b"", ct, b""])) == data


def test_two_encryptions_differ() -> None:
    data = b"x" * 100
    assert encrypt_bytes(KEY, data, C) != encrypt_bytes(KEY, data, C)


def test_encryptor_api_matches_generator() -> None:
    data = os.urandom(2 * C + 7)
    enc = StreamEncryptor(KEY, C, salt=b"\x05" * 16)
    parts = [enc.header(), enc.encrypt_chunk(data[:C], False), enc.encrypt_chunk(data[C : 2 * C], False)]
    parts.append(enc.encrypt_chunk(data[2 * C :], True))
    assert decrypt_bytes(KEY, b"".join(parts)) == data
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"more", True)  # after final


def test_encryptor_refuses_wrong_chunk_sizes() -> None:
    enc = StreamEncryptor(KEY, C)
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"x" * (C - 1), False)
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"x" * (C + 1), True)
    enc.encrypt_chunk(b"x" * C, False)
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"", True)  # empty final only for an empty stream


def test_decryptor_api() -> None:
    data = os.urandom(C + 3)
    header, chunks = split_chunks(encrypt_bytes(KEY, data, C))
    dec = StreamDecryptor(KEY, header)
    out = dec.decrypt_chunk(chunks[0], False) + dec.decrypt_chunk(chunks[1], True)
    assert out == data
    with pytest.raises(StreamError):
        dec.decrypt_chunk(chunks[1], True)


@pytest.mark.parametrize("bad", [b"", b"k" * 31, b"k" * 33])
def test_bad_key_length(bad: bytes) -> None:
    with pytest.raises(CryptoError):
        encrypt_bytes(bad, b"x")
    with pytest.raises(CryptoError):
        decrypt_bytes(bad, encrypt_bytes(KEY, b"x"))


# --- tampering -----------------------------------------------------------------------------

DATA = bytes(range(256)) * 2  # 512 bytes = 8 full chunks of 64: exact multiple


@pytest.fixture(params=[len(DATA), len(DATA) - 9], ids=["exact-multiple", "odd-size"])
def ct(request: pytest.FixtureRequest) -> bytes:
    return encrypt_bytes(KEY, DATA[: request.param], C)


def test_every_single_bit_flip_fails(ct: bytes) -> None:
    for pos in range(len(ct)):
        for bit in (0, 7):
            bad = bytearray(ct)
            bad[pos] ^= 1 << bit
            with pytest.raises(StreamError):
                decrypt_bytes(KEY, bytes(bad))


def test_wrong_key_fails(ct: bytes) -> None:
    fails(ct, bytes(32))


def test_reordered_chunks_fail(ct: bytes) -> None:
    header, chunks = split_chunks(ct)
    swapped = chunks[:]
    swapped[1], swapped[2] = swapped[2], swapped[1]
    fails(header + b"".join(swapped))
    # Moving the final chunk forward fails too.
    fails(header + b"".join([chunks[-1]] + chunks[:-1]))


def test_dropped_or_duplicated_middle_chunk_fails(ct: bytes) -> None:
    header, chunks = split_chunks(ct)
    fails(header + b"".join(chunks[:3] + chunks[4:]))
    fails(header + b"".join(chunks[:3] + chunks[2:]))


def test_truncation_at_every_length_fails(ct: bytes) -> None:
    for n in range(len(ct)):
        with pytest.raises(StreamError):
            decrypt_bytes(KEY, ct[:n])


def test_truncation_at_chunk_boundary_names_the_missing_final_chunk(ct: bytes) -> None:
    header, chunks = split_chunks(ct)
    with pytest.raises(StreamError, match="final chunk is missing"):
        decrypt_bytes(KEY, header + b"".join(chunks[:-1]))


def test_extension_after_final_fails(ct: bytes) -> None:
    header, chunks = split_chunks(ct)
    fails(ct + b"\x00")
    fails(ct + chunks[-1])
    fails(ct + chunks[0])
    fails(ct + encrypt_bytes(KEY, b"", C)[HEADER_SIZE:])


def test_splicing_between_streams_fails(ct: bytes) -> None:
    other = encrypt_bytes(KEY, DATA[: len(ct) - HEADER_SIZE - 8 * TAG_SIZE], C)  # same key, same size
    assert len(other) == len(ct)
    h1, c1 = split_chunks(ct)
    h2, c2 = split_chunks(other)
    fails(h2 + b"".join(c1))  # another stream's header
    fails(h1 + b"".join(c1[:2] + c2[2:]))  # the tail of another stream
    fails(h1 + b"".join(c1[:2] + [c2[2]] + c1[3:]))  # one chunk from another stream


def test_header_tampering_fails(ct: bytes) -> None:
    header, chunks = split_chunks(ct)
    body = b"".join(chunks)
    fails(b"XIEs" + header[4:] + body)  # magic
    fails(header[:4] + b"\x02" + header[5:] + body)  # version
    fails(header[:5] + (C + 1).to_bytes(4, "big") + header[9:] + body)  # chunk size
    fails(header[:5] + (2**31).to_bytes(4, "big") + header[9:] + body)  # absurd chunk size
    fails(header[:-1] + bytes([header[-1] ^ 1]) + body)  # salt
    fails(header[:10])  # short header
    fails(b"")


def test_rechunking_a_stream_to_another_chunk_size_fails() -> None:
    # A stream re-labelled with another chunk size must not decrypt even if lengths line up.
    data = os.urandom(4 * C)
    ct = encrypt_bytes(KEY, data, C)
    header, chunks = split_chunks(ct)
    fails(header[:5] + (2 * C + TAG_SIZE).to_bytes(4, "big") + header[9:] + b"".join(chunks))


def test_chunk_size_bounds() -> None:
    with pytest.raises(CryptoError):
        StreamEncryptor(KEY, s.MIN_CHUNK_SIZE - 1)
    with pytest.raises(CryptoError):
        StreamEncryptor(KEY, s.MAX_CHUNK_SIZE + 1)
    with pytest.raises(StreamError):
        plaintext_size(HEADER_SIZE + C + TAG_SIZE + 5, C)  # a tail too short to be a chunk


def test_nonce_index_overflow_is_refused() -> None:
    enc = StreamEncryptor(KEY, C)
    enc._index = s.MAX_CHUNKS  # as if 2**32 chunks had been written
    with pytest.raises(CryptoError, match="too long"):
        enc.encrypt_chunk(b"x" * C, False)


# --- constant memory -----------------------------------------------------------------------


def test_50_mb_stream_in_constant_memory() -> None:
    total = 50 * 1024 * 1024
    rng = random.Random(6)
    piece = rng.randbytes(1024 * 1024 + 13)  # odd-sized pieces cross chunk boundaries

    def source() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            n = min(len(piece), total - sent)
            yield piece[:n]
            sent += n

    def uneven(it: Iterator[bytes]) -> Iterator[bytes]:
        # Re-cut the ciphertext into 100,003-byte pieces, as a network would.
        buf = bytearray()
        for x in it:
            buf += x
            while len(buf) >= 100_003:
                yield bytes(buf[:100_003])
                del buf[:100_003]
        yield bytes(buf)

    expected = hashlib.sha256()
    for x in source():
        expected.update(x)
    got = hashlib.sha256()
    size = 0
    tracemalloc.start()
    try:
        for out in decrypt_stream(KEY, uneven(encrypt_stream(KEY, source()))):
            got.update(out)
            size += len(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total
    assert got.digest() == expected.digest()
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes is not constant memory"
