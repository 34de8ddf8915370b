"""Test helpers for the pure consensus modules: a stand-in signer and ready-made messages."""

from __future__ import annotations

from pienode.consensus import messages as m

A, B = bytes([0xA]) * 32, bytes([0xB]) * 32


def sign(body: bytes) -> bytes:
    """A stand-in signature: distinct per body, checked by nobody in these tests."""
    return b"s" + body[-4:]


def cp(replica: str, seq: int, digest: bytes = A) -> m.Checkpoint:
    return m.make_checkpoint(seq, digest, replica, sign)
