"""The lean download's own machinery, on a real node: the receive buffer handed from one
download to the next, and what happens when a check or the key fails on that path."""

from __future__ import annotations

import os

import pytest

from pienode.client import download, emr, rawget, transfer
from pienode.client.session import Session
from pienode.crypto import grants
from pienode.errors import CryptoError
from tests.integration.test_record_content import world  # noqa: F401  # the fixture

pytestmark = pytest.mark.usefixtures("world")


async def test_one_buffer_serves_download_after_download_and_never_mixes_them(world):  # noqa: F811
    rn = world
    small_src = rn.tmp / "small.bin"
    small_src.write_bytes(os.urandom(70_000))
    async with Session(rn.phy, rn.url) as s:
        small = await emr.upload(s, rn.pat.user_id, small_src, "omics", {"t": "small"})
    given: list[int] = []
    orig = rawget._Answer._reset

    def spy(self, buf=None):
        given.append(id(buf) if buf is not None else 0)
        return orig(self, buf)

    rawget._Answer._reset = spy
    try:
        async with Session(rn.pat, rn.url) as s:
            # Large, small, large, small: each lands in the buffer the previous one used.
            for i, (rec, src) in enumerate([(rn.rec, rn.src), (small, small_src)] * 2):
                out = rn.tmp / f"out{i}.bin"
                got = await emr.fetch(s, rec["record_id"], out)
                assert got["via"] == "own key" and out.read_bytes() == src.read_bytes()
    finally:
        rawget._Answer._reset = orig
    assert given[0] == 0 and all(given[1:])  # a fresh buffer once, then always one given back
    assert len(set(given[1:])) == 1  # the large one, kept: a small answer fits in it


async def test_a_tampered_chunk_or_cid_goes_the_node_checked_way_and_leaves_no_file(world, monkeypatch):  # noqa: F811
    rn = world
    calls: list[str] = []
    orig = download.decrypt_from_store

    async def spy(s, cid, size, dek, out):
        calls.append(cid)
        return await orig(s, cid, size, dek, out)

    monkeypatch.setattr(download, "decrypt_from_store", spy)  # emr calls it through the module
    real_decrypt = download.decrypt_buffer_to_file
    flipped: list[int] = []

    def flip_then_decrypt(ciphertext, dek, output, *, expect_cid=None):  # a damaged copy
        bad = bytearray(ciphertext)
        bad[len(bad) // 2] ^= 1
        flipped.append(len(bad))
        return real_decrypt(bad, dek, output, expect_cid=expect_cid)

    out = rn.tmp / "t.bin"
    async with Session(rn.pat, rn.url) as s:
        monkeypatch.setattr(download, "decrypt_buffer_to_file", flip_then_decrypt)
        got = await emr.fetch(s, rn.rec["record_id"], out)
        assert got["via"] == "own key" and out.read_bytes() == rn.src.read_bytes()
        assert calls == [rn.rec["cid"]] and flipped
        monkeypatch.setattr(download, "decrypt_buffer_to_file", real_decrypt)
        real_check = transfer.CidCheck
        made: list[str] = []

        def first_one_expects_another_cid(cid):  # the lean path's check sees a mismatch
            made.append(cid)
            return real_check("b" + "a" * 58 if len(made) == 1 else cid)

        monkeypatch.setattr(transfer, "CidCheck", first_one_expects_another_cid)
        got = await emr.fetch(s, rn.rec["record_id"], out)
        assert out.read_bytes() == rn.src.read_bytes() and len(calls) == 2 and len(made) == 2
    assert not list(out.parent.glob(".t.bin.*"))  # no temporary file left behind


async def test_keys_that_do_not_open_fail_clearly_and_leave_nothing(world, monkeypatch):  # noqa: F811
    rn = world

    def refuse(dsk, capsule):
        raise CryptoError("cannot open key capsule (wrong key or tampered capsule)")

    monkeypatch.setattr(grants.pre, "open_original", refuse)
    out = rn.tmp / "k.bin"
    async with Session(rn.pat, rn.url) as s:
        with pytest.raises(CryptoError, match="cannot open key capsule"):
            await emr.fetch(s, rn.rec["record_id"], out)
    assert not out.exists() and not list(out.parent.glob(".k.bin.*"))


async def test_a_large_download_goes_direct_and_a_tampered_one_leaves_no_file(world, monkeypatch):  # noqa: F811
    """Past the first 8 MiB the output goes out with O_DIRECT (pienode.directio); a copy that
    fails its checks after those writes still leaves nothing, and the node-checked retry
    writes the right bytes."""
    from pienode import directio

    rn = world
    src = rn.tmp / "large.bin"
    src.write_bytes(os.urandom(3 * directio.STAGE_BYTES + 12345))
    async with Session(rn.phy, rn.url) as s:
        rec = await emr.upload(s, rn.pat.user_id, src, "omics", {"t": "large"})
    real_open = os.open
    direct: list[str] = []

    def spy_open(path, flags, *args, **kw):
        if flags & directio.O_DIRECT and str(path).startswith(str(rn.tmp / ".l.bin.")):
            direct.append(str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(transfer.AtomicOutput, "direct", True)
    real_decrypt = download.decrypt_buffer_to_file
    flipped: list[int] = []

    def flip_late_then_decrypt(ciphertext, dek, output, *, expect_cid=None):
        bad = bytearray(ciphertext)
        bad[-1000] ^= 1  # in the last chunk: everything before it is written by then
        flipped.append(len(bad))
        return real_decrypt(bad, dek, output, expect_cid=expect_cid)

    monkeypatch.setattr(download, "decrypt_buffer_to_file", flip_late_then_decrypt)
    out = rn.tmp / "l.bin"
    async with Session(rn.pat, rn.url) as s:
        got = await emr.fetch(s, rec["record_id"], out)
    assert flipped and len(set(direct)) == 2  # the damaged try and the retry both went direct
    assert got["via"] == "own key" and out.read_bytes() == src.read_bytes()
    assert out.stat().st_mode & 0o777 == 0o600
    assert not list(out.parent.glob(".l.bin.*"))
