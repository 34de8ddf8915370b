"""STREAM AES-256-GCM: round trips, constant memory, and every tampering case fails."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

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
from pienode.crypto.stream_whole import decrypt_buffer
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
    full = chunk_size + TAG_SIZE  # the header counts as part of chunk 0
    parts = [ct[i : i + full] for i in range(0, len(ct), full)]
    return parts[0][:HEADER_SIZE], [parts[0][HEADER_SIZE:]] + parts[1:]


def fails(ct: bytes, key: bytes = KEY) -> None:
    with pytest.raises(StreamError):
        decrypt_bytes(key, ct)
    # The same bytes fed one at a time must fail the same way.
    with pytest.raises(StreamError):
        list(decrypt_stream(key, (ct[i : i + 1] for i in range(len(ct)))))
    # And held whole in one buffer, as a download received at once is decrypted.
    with pytest.raises(StreamError):
        list(decrypt_buffer(key, ct))


EXACT = [C - HEADER_SIZE, 2 * C - HEADER_SIZE, 5 * C - HEADER_SIZE]  # whole chunks


SIZES = [0, 1, 38, 40, C - 1, C, C + 1, 2 * C, 3 * C - 1, 5 * C, 1000]


@pytest.mark.parametrize("n", SIZES + EXACT)
def test_round_trip_sizes(n: int) -> None:
    data = os.urandom(n)
    parts = list(encrypt_stream(KEY, [data], C))
    # Every chunk but the last ends on a multiple of C + 16 (the header counts in chunk 0).
    ends = list(itertools.accumulate(len(p) for p in parts))[1:]
    assert all(e % (C + TAG_SIZE) == 0 for e in ends[:-1])
    assert len(parts) == 2 + max(0, -(-(n - (C - HEADER_SIZE)) // C))
    ct = b"".join(parts)
    assert len(ct) == ciphertext_size(n, C)
    assert plaintext_size(len(ct), C) == n
    assert decrypt_bytes(KEY, ct) == data
    assert len(data) < 8 or data not in ct


def test_empty_input_is_one_final_empty_chunk() -> None:
    ct = encrypt_bytes(KEY, b"", C)
    assert len(ct) == HEADER_SIZE + TAG_SIZE
    assert list(decrypt_stream(KEY, [ct])) == [b""]
    assert b"".join(decrypt_stream(KEY, [ct[:HEADER_SIZE], ct[HEADER_SIZE:]])) == b""


def test_default_chunk_size_aligns_ciphertext_chunks_to_256_kib_blocks() -> None:
    data = os.urandom(3 * s.DEFAULT_CHUNK_SIZE + 5)
    out = list(encrypt_stream(KEY, [data]))
    block = 256 * 1024
    # Chunk 0 leaves room for the header, so the last chunk carries those 25 bytes + 5.
    tail = HEADER_SIZE + 5 + TAG_SIZE
    assert [len(x) for x in out] == [HEADER_SIZE, block - HEADER_SIZE, block, block, tail]
    ct = b"".join(out)
    assert len(ct) == 3 * block + tail == ciphertext_size(len(data))
    # Blocks as the file store cuts them decrypt as they are.
    blocks = [ct[i : i + block] for i in range(0, len(ct), block)]
    assert b"".join(decrypt_stream(KEY, blocks)) == data


def test_chunk_zero_is_shortened_by_the_header() -> None:
    assert s.chunk_capacity(0, C) == C - HEADER_SIZE and s.chunk_capacity(1, C) == C
    assert ciphertext_size(C - HEADER_SIZE, C) == C + TAG_SIZE
    assert ciphertext_size(C - HEADER_SIZE + 1, C) == C + TAG_SIZE + 1 + TAG_SIZE


def test_mutable_reused_input_buffer_round_trips() -> None:
    # A reader that refills one bytearray (readinto) must not corrupt held-back chunks.
    data = os.urandom(10 * C + 3)

    def reader(step: int) -> Iterator[bytearray]:
        buf = bytearray(step)
        for i in range(0, len(data), step):
            n = len(data[i : i + step])
            buf[:n] = data[i : i + step]
            yield buf if n == step else buf[:n]

    for step in (C - HEADER_SIZE, C, 2 * C, 7, 3 * C + 1):
        ct = b"".join(encrypt_stream(KEY, reader(step), C))
        assert decrypt_bytes(KEY, ct) == data
        cut = [bytearray(ct[i : i + step]) for i in range(0, len(ct), step)]
        assert b"".join(decrypt_stream(KEY, cut)) == data
        assert b"".join(decrypt_stream(KEY, (memoryview(x) for x in cut))) == data


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
    a = C - HEADER_SIZE
    assert enc.next_capacity() == a
    parts = [enc.header(), enc.encrypt_chunk(data[:a], False)]
    assert enc.next_capacity() == C
    parts.append(enc.encrypt_chunk(data[a : a + C], False))
    parts.append(enc.encrypt_chunk(data[a + C :], True))
    assert decrypt_bytes(KEY, b"".join(parts)) == data
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"more", True)  # after final


def test_encryptor_refuses_wrong_chunk_sizes() -> None:
    enc = StreamEncryptor(KEY, C)
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"x" * C, False)  # chunk 0 is shorter by the header
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"x" * (C - HEADER_SIZE + 1), True)
    enc.encrypt_chunk(b"x" * (C - HEADER_SIZE), False)
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"x" * (C - 1), False)
    with pytest.raises(CryptoError):
        enc.encrypt_chunk(b"", True)  # empty final only for an empty stream


def test_decryptor_api() -> None:
    data = os.urandom(C - HEADER_SIZE + 3)
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

DATA = (bytes(range(256)) * 2)[HEADER_SIZE:]  # chunk 0 (39 bytes) + 7 chunks of 64: exact


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
    other = encrypt_bytes(KEY, bytes(plaintext_size(len(ct), C)), C)  # same key, same size
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
        plaintext_size(C + TAG_SIZE + 5, C)  # a tail too short to be a chunk
    with pytest.raises(StreamError):
        plaintext_size(HEADER_SIZE + TAG_SIZE - 1, C)


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


def test_read_aligned_round_trips_and_falls_on_chunk_boundaries(tmp_path: Path) -> None:
    data = os.urandom(9 * C + 11)
    path = tmp_path / "record.bin"
    path.write_bytes(data)
    with path.open("rb") as f:
        reads = list(s.read_aligned(f, C, chunks_per_read=2))
    assert len(reads[0]) == C - HEADER_SIZE and all(len(r) == 2 * C for r in reads[1:-1])
    assert b"".join(reads) == data
    with path.open("rb") as f:
        ct = b"".join(encrypt_stream(KEY, s.read_aligned(f, C), C))
    assert decrypt_bytes(KEY, ct) == data
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with empty.open("rb") as f:
        assert decrypt_bytes(KEY, b"".join(encrypt_stream(KEY, s.read_aligned(f, C), C))) == b""


@pytest.mark.parametrize("chunk", [C, 100, s.DEFAULT_CHUNK_SIZE])
def test_size_functions_are_exact_inverses(chunk: int) -> None:
    for n in list(range(0, 6 * chunk, max(1, chunk // 50))) + [chunk - HEADER_SIZE, 10**9]:
        assert plaintext_size(ciphertext_size(n, chunk), chunk) == n
    valid = 0
    for m in range(0, 4 * (chunk + TAG_SIZE) + 3, max(1, chunk // 64)):
        try:
            n = plaintext_size(m, chunk)
        except StreamError:
            continue
        valid += 1
        assert ciphertext_size(n, chunk) == m
    assert valid > 0
