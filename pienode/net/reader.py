"""The socket side of an established peer link: an asyncio ``BufferedProtocol`` that cuts the
incoming byte stream into sealed frames, and the write flow control of the link.

Why a protocol and not ``asyncio.StreamReader``: a StreamReader copies every byte three times
(``recv`` into a fresh bytes object, appended to its buffer with reallocations, sliced out
again by ``readexactly``). On the push of a 1 GiB upload those copies cost the replica more
CPU than the frames' AES-GCM (issue 7). Here a small frame is received into one reused
staging buffer and copied out once (it is small); a large frame's bytes go from the kernel
straight into a buffer of that frame's own, which the link then decrypts in place.

Owns: frame boundaries (4-byte big-endian length, then that many bytes), the length checks
(``max_frame``, the smallest sealed frame) made before anything is allocated for a frame,
pausing the socket while too many received frames wait for the link, and the
``pause_writing``/``resume_writing`` flow control of the link's writes.

Must never: allocate for a frame before its length passed the checks; deliver bytes after
the first malformed length; raise into the event loop (every failure is reported to the
link's read loop as a ``LinkEnd``).
"""

from __future__ import annotations

import asyncio
from collections import deque

from pienode.buffers import scratch

#: Staging buffer for small frames (and length prefixes); a frame larger than half of it
#: gets a buffer of its own, filled straight from the socket.
STAGE_SIZE = 256 * 1024
_BIG = STAGE_SIZE // 2
LENGTH_SIZE = 4


class LinkEnd(Exception):
    """The stream ended: ``bad`` is True for a peer's protocol violation (a malformed or
    truncated frame), False for a clean close or a socket error; ``why`` says which."""

    def __init__(self, why: str, *, bad: bool) -> None:
        super().__init__(why)
        self.why = why
        self.bad = bad


class FrameReader(asyncio.BufferedProtocol):
    """Frames as they arrive, for one link's read loop (``next_frame``)."""

    def __init__(self, transport: asyncio.Transport, *, max_frame: int, min_frame: int,
                 queue_bytes: int) -> None:
        """Args:
        max_frame / min_frame: frame lengths outside these bounds end the link as bad.
        queue_bytes: reading pauses while more than this waits for ``next_frame``.
        """
        self._transport = transport
        self._max, self._min, self._queue_max = max_frame, min_frame, queue_bytes
        self._stage = bytearray(STAGE_SIZE)
        self._view = memoryview(self._stage)
        self._pos = self._end = 0  # unparsed bytes are stage[pos:end]
        self._big: bytearray | None = None  # a large frame being filled in place
        self._got = 0
        self._frames: deque[bytearray | bytes] = deque()
        self._queued = 0
        self._end_of_stream: LinkEnd | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = False

    # ---- taking over from the handshake's StreamReader ----------------------------------

    def take_over(self, leftover: bytes, eof: bool) -> None:
        """Install this protocol on the transport. ``leftover``: bytes the handshake's
        reader had already buffered past the handshake; ``eof``: it had seen the end."""
        self._transport.set_protocol(self)
        if leftover:
            self._feed(leftover)
        if eof:
            self.eof_received()
        elif not self._transport.is_reading() and not self._reading_paused:
            self._transport.resume_reading()

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view) and self._end_of_stream is None:
            buf = self.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    # ---- BufferedProtocol ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._got:]
        if self._pos == self._end:
            self._pos = self._end = 0
        elif self._end == STAGE_SIZE or STAGE_SIZE - self._end < _BIG and self._pos:
            # Move the unparsed tail (less than one small frame) to the front.
            n = self._end - self._pos
            self._stage[:n] = self._view[self._pos:self._end]
            self._pos, self._end = 0, n
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._end_of_stream is not None:
            return  # a bad length was seen: nothing after it is parsed
        if self._big is not None:
            self._got += nbytes
            if self._got == len(self._big):
                self._push(self._big)
                self._big = None
            return
        self._end += nbytes
        self._parse()

    def _parse(self) -> None:
        stage = self._stage
        while self._end - self._pos >= LENGTH_SIZE:
            length = int.from_bytes(stage[self._pos:self._pos + LENGTH_SIZE], "big")
            if length > self._max:
                self._finish(LinkEnd(f"oversized frame ({length} > {self._max} bytes)", bad=True))
                return
            if length < self._min:
                self._finish(LinkEnd("undersized frame", bad=True))
                return
            start = self._pos + LENGTH_SIZE
            have = self._end - start
            if have >= length:
                self._push(bytes(self._view[start:start + length]))
                self._pos = start + length
                continue
            if length > _BIG:
                # Its own buffer: what already arrived is copied once, the rest lands in place.
                big = scratch(length)  # filled from the socket before it is read
                big[:have] = self._view[start:self._end]
                self._big, self._got = big, have
                self._pos = self._end = 0
            return

    def _push(self, frame: bytearray | bytes) -> None:
        self._frames.append(frame)
        self._queued += len(frame)
        if self._queued > self._queue_max and not self._reading_paused and not self._lost:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def _finish(self, end: LinkEnd) -> None:
        if self._end_of_stream is None:
            self._end_of_stream = end
        self._wake()

    def eof_received(self) -> bool:
        if self._big is not None or self._end - self._pos >= LENGTH_SIZE:
            self._finish(LinkEnd("truncated frame", bad=True))
        elif self._end > self._pos:
            self._finish(LinkEnd("truncated length prefix", bad=True))
        else:
            self._finish(LinkEnd("peer closed the link", bad=False))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is None:
            self.eof_received()
        else:
            self._finish(LinkEnd(f"read failed: {type(exc).__name__}", bad=False))
        self._write_paused = False
        self._release_drainers(exc or ConnectionResetError("connection lost"))

    # ---- the link's side ----------------------------------------------------------------

    async def next_frame(self) -> bytearray | bytes:
        """The next whole frame, in order.

        Raises:
            LinkEnd: once every frame before the end was taken.
        """
        while not self._frames:
            if self._end_of_stream is not None:
                raise self._end_of_stream
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        frame = self._frames.popleft()
        self._queued -= len(frame)
        if self._reading_paused and self._queued <= self._queue_max // 2 and not self._lost:
            self._reading_paused = False
            self._transport.resume_reading()
        return frame

    # ---- write flow control -------------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drainers(None)

    def _release_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark.

        Raises:
            ConnectionResetError: the connection is gone.
        """
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._write_paused:
            return
        w = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(w)
        await w
