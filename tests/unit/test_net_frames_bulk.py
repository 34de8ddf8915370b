"""Large frames without copies: sealing from parts, opening in place, payload views, and the
protocol that cuts frames from the socket (``pienode.net.reader.FrameReader``)."""

from __future__ import annotations

import asyncio
import os

import pytest

from pienode.net.frames import (
    HEADER_SIZE,
    KIND_MESSAGE,
    KIND_REQUEST,
    LARGE_RECORD,
    LENGTH_SIZE,
    TAG_SIZE,
    FrameCipher,
    FrameError,
    encode_header,
    iter_record,
)
from pienode.buffers import scratch
from pienode.net.reader import STAGE_SIZE, FrameReader, LinkEnd

KEY = bytes(range(32))


@pytest.mark.parametrize("size", [0, 100, LARGE_RECORD - 1, LARGE_RECORD, 3 << 20])
def test_sealed_parts_are_the_one_shot_frame(size):
    payload = os.urandom(size)
    parts = [encode_header(KIND_REQUEST, 2, 9, size), payload]
    framed = FrameCipher(KEY).seal_framed(parts, HEADER_SIZE + size)
    sealed = FrameCipher(KEY).seal(b"".join(parts))
    assert bytes(framed) == len(sealed).to_bytes(LENGTH_SIZE, "big") + sealed


def test_scratch_has_the_asked_size_and_is_writable():
    a, b = scratch(5000), scratch(5000)
    a[:] = b"x" * 5000
    assert len(b) == 5000 and bytes(a) == b"x" * 5000 and a is not b


def test_large_frame_opens_in_place_and_views_are_read_only():
    payload = os.urandom(3 << 20)
    rec = encode_header(KIND_REQUEST, 2, 1, len(payload)) + payload + encode_header(KIND_MESSAGE, 0, 0, 3) + b"abc"
    frame = bytearray(FrameCipher(KEY).seal(rec))
    opened = FrameCipher(KEY).open_in_place(frame)
    msgs = list(iter_record(opened, frozenset({2})))
    (k1, c1, r1, p1), (k2, c2, r2, p2) = msgs
    assert isinstance(p1, memoryview) and p1.readonly and bytes(p1) == payload
    assert isinstance(p2, bytes) and p2 == b"abc"  # a channel not in ``views`` is copied
    with pytest.raises(TypeError):
        p1[0] = 0


@pytest.mark.parametrize("position", [0, 1000, (3 << 20) - 5, (3 << 20) + 14 + 3])
def test_tampered_large_frame_fails_in_place(position):
    rec = encode_header(KIND_REQUEST, 2, 1, 3 << 20) + os.urandom(3 << 20)
    frame = bytearray(FrameCipher(KEY).seal(rec))
    frame[position] ^= 1
    with pytest.raises(FrameError):
        FrameCipher(KEY).open_in_place(frame)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol = None
        self.reading = True
        self.closed = False

    def set_protocol(self, protocol):
        self.protocol = protocol

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed


def deliver(reader: FrameReader, data: bytes, piece: int) -> None:
    """What the event loop does: recv_into get_buffer(), then buffer_updated()."""
    view = memoryview(data)
    while len(view):
        buf = reader.get_buffer(-1)
        n = min(len(buf), len(view), piece)
        assert n > 0
        buf[:n] = view[:n]
        reader.buffer_updated(n)
        view = view[n:]


def frames_of(*sizes: int) -> tuple[list[bytes], bytes]:
    frames = [os.urandom(n) for n in sizes]
    return frames, b"".join(len(f).to_bytes(4, "big") + f for f in frames)


async def take_all(reader: FrameReader, count: int) -> list[bytes]:
    return [bytes(await reader.next_frame()) for _ in range(count)]


@pytest.mark.parametrize("piece", [1, 7, 4096, 65536, 1 << 20])
async def test_frames_of_every_size_come_out_whole_and_in_order(piece):
    sizes = [30, STAGE_SIZE // 2 - 4, STAGE_SIZE // 2 + 1, 40, STAGE_SIZE + 3, 4 << 20, 31, 1000]
    if piece == 1:
        sizes = [30, 200, 31]  # byte by byte: small frames only, to stay quick
    frames, stream = frames_of(*sizes)
    t = FakeTransport()
    reader = FrameReader(t, max_frame=4 << 20, min_frame=30, queue_bytes=64 << 20)
    reader.take_over(stream[:3], eof=False)
    deliver(reader, stream[3:], piece)
    assert await take_all(reader, len(frames)) == frames
    reader.eof_received()
    with pytest.raises(LinkEnd) as end:
        await reader.next_frame()
    assert not end.value.bad and end.value.why == "peer closed the link"


async def test_oversized_length_ends_the_link_before_any_allocation_and_frames_before_it_count():
    frames, stream = frames_of(40)
    t = FakeTransport()
    reader = FrameReader(t, max_frame=1000, min_frame=30, queue_bytes=1 << 20)
    reader.take_over(b"", eof=False)
    deliver(reader, stream + (1001).to_bytes(4, "big") + b"z" * 5000, 4096)
    assert await take_all(reader, 1) == frames
    with pytest.raises(LinkEnd) as end:
        await reader.next_frame()
    assert end.value.bad and "oversized" in end.value.why


@pytest.mark.parametrize("cut, why", [(2, "truncated length prefix"), (10, "truncated frame"),
                                      (4 + 200_000, "truncated frame")])
async def test_a_stream_cut_short_is_a_bad_frame(cut, why):
    _, stream = frames_of(300_000)
    reader = FrameReader(FakeTransport(), max_frame=1 << 20, min_frame=30, queue_bytes=1 << 20)
    reader.take_over(b"", eof=False)
    deliver(reader, stream[:cut], 65536)
    reader.eof_received()
    with pytest.raises(LinkEnd) as end:
        await reader.next_frame()
    assert end.value.bad and end.value.why == why


async def test_undersized_frame_is_bad():
    reader = FrameReader(FakeTransport(), max_frame=1 << 20, min_frame=30, queue_bytes=1 << 20)
    reader.take_over((29).to_bytes(4, "big") + b"x" * 29, eof=False)
    with pytest.raises(LinkEnd) as end:
        await reader.next_frame()
    assert end.value.bad and end.value.why == "undersized frame"


async def test_reading_pauses_while_frames_wait_and_resumes_once_taken():
    frames, stream = frames_of(*([100_000] * 6))
    t = FakeTransport()
    reader = FrameReader(t, max_frame=1 << 20, min_frame=30, queue_bytes=250_000)
    reader.take_over(b"", eof=False)
    deliver(reader, stream, 65536)
    assert not t.reading
    assert await take_all(reader, 6) == frames
    assert t.reading


async def test_drain_waits_for_resume_writing_and_fails_once_lost():
    reader = FrameReader(FakeTransport(), max_frame=1 << 20, min_frame=30, queue_bytes=1 << 20)
    reader.take_over(b"", eof=False)
    await reader.drain()  # not paused: returns at once
    reader.pause_writing()
    waiting = asyncio.ensure_future(reader.drain())
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.resume_writing()
    await waiting
    reader.pause_writing()
    waiting = asyncio.ensure_future(reader.drain())
    await asyncio.sleep(0)
    reader.connection_lost(ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        await waiting
    with pytest.raises(LinkEnd) as end:
        await reader.next_frame()
    assert end.value.why == "read failed: ConnectionResetError"
