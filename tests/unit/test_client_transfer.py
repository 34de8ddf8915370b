"""The client's download checks: every chunk authenticates, and the ciphertext makes its CID."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pienode.client.transfer import CidCheck, ContentMismatch, decrypt_to_file
from pienode.crypto.stream import StreamError, encrypt_stream
from pienode.files.unixfs import CHUNK_SIZE, cid_of_bytes

DEK = bytes(range(32))


def _ciphertext(plain: bytes, dek: bytes = DEK) -> bytes:
    return b"".join(encrypt_stream(dek, [plain]))


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 41, CHUNK_SIZE, 3 * CHUNK_SIZE + 7])
@pytest.mark.parametrize("piece", [1000, 65_536, CHUNK_SIZE, 1 << 20])
async def test_decrypts_and_checks_the_cid_for_any_split(tmp_path: Path, size: int, piece: int) -> None:
    plain = os.urandom(size)
    ct = _ciphertext(plain)
    out = tmp_path / "out.bin"
    n = await decrypt_to_file(_pieces(ct, piece), DEK, out, expect_cid=str(cid_of_bytes(ct)))
    assert n == size and out.read_bytes() == plain


async def test_a_valid_ciphertext_under_the_same_key_but_another_cid_is_refused(tmp_path: Path) -> None:
    # What a node colluding with a key holder could serve: it authenticates, yet it is not
    # the ciphertext the chain records. Only the CID check catches it.
    recorded = _ciphertext(b"the record on the chain" * 1000)
    other = _ciphertext(b"another text, same key!" * 1000)
    out = tmp_path / "out.bin"
    with pytest.raises(ContentMismatch, match="do not match the record's CID"):
        await decrypt_to_file(_pieces(other, 65_536), DEK, out, expect_cid=str(cid_of_bytes(recorded)))
    assert not out.exists() and not list(tmp_path.iterdir())


async def test_a_flipped_byte_fails_and_leaves_nothing(tmp_path: Path) -> None:
    ct = bytearray(_ciphertext(os.urandom(2 * CHUNK_SIZE)))
    cid = str(cid_of_bytes(bytes(ct)))
    ct[CHUNK_SIZE + 5] ^= 1
    with pytest.raises(StreamError):
        await decrypt_to_file(_pieces(bytes(ct), 65_536), DEK, tmp_path / "out.bin", expect_cid=cid)
    assert not list(tmp_path.iterdir())


def test_cid_check_matches_the_store_for_any_split() -> None:
    data = os.urandom(5 * CHUNK_SIZE + 3)
    for piece in (7, 100_003, CHUNK_SIZE, len(data)):
        check = CidCheck(str(cid_of_bytes(data)))
        for i in range(0, len(data), piece):
            check.feed(data[i : i + piece])
        check.check()
    check = CidCheck(str(cid_of_bytes(data)))
    check.feed(data[:-1])
    with pytest.raises(ContentMismatch):
        check.check()


@pytest.mark.parametrize("whole", [True, False])
async def test_received_whole_or_streamed_the_same_checks_hold(tmp_path: Path, whole: bool) -> None:
    plain = os.urandom(2 * CHUNK_SIZE + 99)
    ct = _ciphertext(plain)
    cid = str(cid_of_bytes(ct))
    size = len(ct) if whole else None
    out = tmp_path / "out.bin"
    assert await decrypt_to_file(_pieces(ct, 70_000), DEK, out, expect_cid=cid, size=size) == len(plain)
    assert out.read_bytes() == plain
    out.unlink()
    other = _ciphertext(plain)  # same key and plaintext, fresh salt: another CID
    with pytest.raises(ContentMismatch):
        await decrypt_to_file(_pieces(other, 70_000), DEK, out, expect_cid=cid, size=size)
    cut = ct[: 2 * (CHUNK_SIZE)]
    with pytest.raises(StreamError):
        await decrypt_to_file(_pieces(cut, 70_000), DEK, out, size=size)
    assert not list(tmp_path.iterdir())


async def test_a_node_sending_more_than_the_record_holds_is_cut_off(tmp_path: Path) -> None:
    ct = _ciphertext(os.urandom(1000))
    with pytest.raises(ContentMismatch, match="more bytes"):
        await decrypt_to_file(_pieces(ct + bytes(10_000), 4096), DEK, tmp_path / "out.bin",
                              expect_cid=str(cid_of_bytes(ct)), size=len(ct))
    assert not list(tmp_path.iterdir())
