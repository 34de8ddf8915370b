"""A download's output file (pienode.client.transfer.AtomicOutput): the first 8 MiB through
the page cache, the rest with O_DIRECT through the staging buffer (pienode.directio), or
buffered where O_DIRECT is refused. Byte-exact around stage and page boundaries, mode 0600,
and nothing left behind when a check fails, on every path. Files in a temp dir on this
machine's ext4, which takes O_DIRECT (the direct-path tests check that it was used)."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pienode.client.transfer import AtomicOutput, ContentMismatch, decrypt_to_file
from pienode.crypto.stream import StreamError, encrypt_stream
from pienode.directio import ALIGN, STAGE_BYTES
from pienode.files.unixfs import cid_of_bytes
from tests.directio_spy import spy_direct

DEK = bytes(range(32))


@pytest.fixture(autouse=True)
def direct_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a fresh client does; a refusal one test provokes is undone."""
    monkeypatch.setattr(AtomicOutput, "direct", True)


SIZES = [0, 1, STAGE_BYTES, STAGE_BYTES + 1, 2 * STAGE_BYTES - 1, 2 * STAGE_BYTES + ALIGN + 1,
         3 * STAGE_BYTES + 12345]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [ALIGN, 262_128, 3_000_001])
def test_output_is_byte_exact_around_stage_and_page_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, piece: int
) -> None:
    opened = spy_direct(monkeypatch)
    data = random.Random(size ^ piece).randbytes(size)
    out = tmp_path / "out.bin"
    o = AtomicOutput(out)
    for i in range(0, size, piece):
        o.write(data[i:i + piece])
    o.commit()
    assert out.read_bytes() == data
    assert out.stat().st_mode & 0o777 == 0o600  # as mkstemp made it, as before
    assert list(tmp_path.iterdir()) == [out]
    if size <= STAGE_BYTES:
        assert not opened  # a small output stays in the page cache, written as it came
    if size >= 2 * STAGE_BYTES + ALIGN:
        assert opened  # past a full stage beyond the first 8 MiB: O_DIRECT


@pytest.mark.parametrize("refused", ["open", "write"])
def test_falls_back_to_buffered_where_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """As on tmpfs (open fails) or a device with larger sectors (the write fails)."""
    opened = spy_direct(monkeypatch, refused)
    data = random.Random(7).randbytes(3 * STAGE_BYTES + 4097)
    out = tmp_path / "out.bin"
    o = AtomicOutput(out)
    for i in range(0, len(data), 262_128):
        o.write(data[i:i + 262_128])
    o.commit()
    assert out.read_bytes() == data and len(opened) == 1
    assert not AtomicOutput.direct  # later downloads do not try again
    out2 = tmp_path / "out2.bin"
    o = AtomicOutput(out2)
    o.write(data)
    o.commit()
    assert out2.read_bytes() == data and len(opened) == 1


def test_staging_buffer_is_reused_from_one_download_to_the_next(tmp_path: Path) -> None:
    data = os.urandom(STAGE_BYTES + 100)
    stages = []
    for name in ("a", "b"):
        o = AtomicOutput(tmp_path / name)
        o.write(data)
        o.write(data)
        stages.append(o._large.stage if o._large else None)
        o.commit()
        assert (tmp_path / name).read_bytes() == data + data
    assert stages[0] is not None and stages[0] is stages[1]


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("refused", [None, "open", "write"])
@pytest.mark.parametrize("whole", [True, False])
async def test_large_download_decrypts_exactly_and_a_late_tamper_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str | None, whole: bool
) -> None:
    opened = spy_direct(monkeypatch, refused)
    plain = os.urandom(3 * STAGE_BYTES + 777)
    ct = b"".join(encrypt_stream(DEK, [plain]))
    cid = str(cid_of_bytes(ct))
    size = len(ct) if whole else None  # received whole (worker thread) or streamed
    out = tmp_path / "out.bin"
    assert await decrypt_to_file(_pieces(ct, 65_536), DEK, out, expect_cid=cid, size=size) == len(plain)
    assert out.read_bytes() == plain and out.stat().st_mode & 0o777 == 0o600
    assert opened and (refused is not None or AtomicOutput.direct)
    out.unlink()
    # A flipped byte in the last chunk: everything before it was written (directly) already.
    bad = bytearray(ct)
    bad[-100] ^= 1
    with pytest.raises(StreamError):
        await decrypt_to_file(_pieces(bytes(bad), 65_536), DEK, out, expect_cid=cid, size=size)
    assert not list(tmp_path.iterdir())
    other = b"".join(encrypt_stream(DEK, [plain]))  # authenticates, but another CID
    with pytest.raises(ContentMismatch):
        await decrypt_to_file(_pieces(other, 65_536), DEK, out, expect_cid=cid, size=size)
    assert not list(tmp_path.iterdir())
