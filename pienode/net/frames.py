"""Wire format of an established peer link: records, the messages inside them, their cipher.

Owns: the byte layout after the handshake and the per-direction AEAD. Never does I/O and
never logs (a frame's plaintext is patient-adjacent data and must not reach a log line).

On the wire, a link carries *frames*: a 4-byte big-endian length, then that many bytes of
AES-256-GCM ciphertext (with its 16-byte tag). Frame ``n`` in a direction is sealed with the
96-bit nonce ``0^4 || n`` (64-bit big-endian counter) under that direction's key; the
counter is never sent, so replay, loss, reordering and tampering all fail the tag.

The plaintext of a frame is a *record*: one or more messages back to back, so that many small
messages share one length prefix, one AEAD call and one socket write (DESIGN.md: frames per
write decide small-message throughput). Each message is a 14-byte header then its payload::

    kind: u8 | channel: u8 | request_id: u64 | length: u32 | payload (length bytes)

Large records are sealed and opened without extra copies (issue 7: on a 1 GiB upload's push
the copies cost more than the AES-GCM): ``seal_framed`` encrypts the messages' parts one
after another (AES-GCM's streaming interface) straight into the frame it returns, length
prefix included, and ``open_in_place`` decrypts a frame inside its own buffer. Both give the
same bytes on the wire as the one-shot calls, which small records keep using.
"""

from __future__ import annotations

import struct
from typing import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pienode.buffers import scratch
from pienode.errors import NetError

LENGTH_SIZE = 4
TAG_SIZE = 16
HEADER = struct.Struct(">BBQI")
HEADER_SIZE = HEADER.size  # 14

#: Message kinds inside a record.
KIND_MESSAGE = 0
KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_ERROR = 3
KIND_PING = 4
KINDS = frozenset({KIND_MESSAGE, KIND_REQUEST, KIND_RESPONSE, KIND_ERROR, KIND_PING})

_MAX_COUNTER = (1 << 64) - 1
#: Records from this size on are sealed part by part (no join) and opened in place.
LARGE_RECORD = 64 * 1024


class FrameError(NetError):
    """A frame or record from the peer that does not parse or does not authenticate."""


def max_payload(max_frame: int) -> int:
    """The largest single payload that fits in a frame of ``max_frame`` bytes."""
    return max_frame - TAG_SIZE - HEADER_SIZE


def encode_header(kind: int, channel: int, request_id: int, length: int) -> bytes:
    return HEADER.pack(kind, channel, request_id, length)


def iter_record(
    record: bytes | bytearray, views: frozenset[int] = frozenset()
) -> Iterator[tuple[int, int, int, bytes | memoryview]]:
    """Yield (kind, channel, request_id, payload) for each message of a decrypted record.
    A payload on a channel in ``views`` is a memoryview into ``record`` (no copy; it keeps
    the whole record alive), any other is bytes of its own.

    Raises:
        FrameError: a truncated header or payload, or an unknown kind. Messages before the
            bad one have already been yielded; the caller closes the link either way.
    """
    view = memoryview(record).toreadonly()
    end = len(record)
    pos = 0
    if end == 0:
        raise FrameError("empty record")
    unpack_from = HEADER.unpack_from
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise FrameError("truncated message header")
        kind, channel, request_id, length = unpack_from(record, pos)
        pos += HEADER_SIZE
        if kind not in KINDS:
            raise FrameError("unknown message kind")
        if end - pos < length:
            raise FrameError("truncated message payload")
        payload = view[pos : pos + length]
        yield kind, channel, request_id, payload if channel in views else bytes(payload)
        pos += length


class FrameCipher:
    """AES-256-GCM with an implicit per-direction counter nonce. One instance per direction.

    The key is a secret: this object has no repr that shows it and must never be logged.
    """

    __slots__ = ("_aead", "_algorithm", "_counter")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aead = AESGCM(key)
        self._algorithm = algorithms.AES(key)
        self._counter = 0

    def _next_nonce(self) -> bytes:
        if self._counter >= _MAX_COUNTER:  # 2^64 frames: never in practice, but never reuse
            raise FrameError("nonce counter exhausted; the link must be re-established")
        nonce = b"\x00\x00\x00\x00" + self._counter.to_bytes(8, "big")
        self._counter += 1
        return nonce

    def seal(self, record: bytes) -> bytes:
        return self._aead.encrypt(self._next_nonce(), record, None)

    def seal_framed(self, parts: list[bytes | bytearray | memoryview], size: int) -> bytearray:
        """The next frame as it goes on the wire: the length prefix, then the record made of
        ``parts`` (``size`` bytes in all) sealed. A large record is encrypted part by part
        into the frame (no joined copy of it is ever made)."""
        out = scratch(LENGTH_SIZE + size + TAG_SIZE)  # every byte is written below
        out[:LENGTH_SIZE] = (size + TAG_SIZE).to_bytes(LENGTH_SIZE, "big")
        view = memoryview(out)
        nonce = self._next_nonce()
        if size < LARGE_RECORD:
            self._aead.encrypt_into(nonce, b"".join(parts), None, view[LENGTH_SIZE:])
            return out
        enc = Cipher(self._algorithm, modes.GCM(nonce)).encryptor()
        pos = LENGTH_SIZE
        for part in parts:
            pos += enc.update_into(part, view[pos:])
        enc.finalize()
        view[pos:] = enc.tag
        return out

    def open_in_place(self, frame: bytearray) -> memoryview:
        """Decrypt the next frame inside its own buffer; returns the record (a view of
        ``frame``, which must not be used for anything else afterwards).

        Raises:
            FrameError: as ``open``.
        """
        if len(frame) < TAG_SIZE:
            raise FrameError("frame shorter than its tag")
        view = memoryview(frame)
        record = view[: len(frame) - TAG_SIZE]
        try:
            # OpenSSL's GCM reads each block before it writes it, so in place is allowed
            # (tests/unit/test_net_frames.py checks it on this build).
            self._aead.decrypt_into(self._next_nonce(), view, None, record)
        except InvalidTag:
            raise FrameError("frame failed authentication") from None
        return record

    def open(self, ciphertext: bytes) -> bytes:
        """Decrypt the next frame in order.

        Raises:
            FrameError: the tag does not verify (tampered, replayed, reordered or lost frame).
        """
        if len(ciphertext) < TAG_SIZE:
            raise FrameError("frame shorter than its tag")
        try:
            return self._aead.decrypt(self._next_nonce(), ciphertext, None)
        except InvalidTag:
            raise FrameError("frame failed authentication") from None

    def __repr__(self) -> str:
        return f"FrameCipher(counter={self._counter})"
