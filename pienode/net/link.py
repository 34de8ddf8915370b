"""One authenticated, encrypted connection to one peer, after the handshake.

Owns: the link's two send queues (priority for consensus, bulk for the rest), the writer
that coalesces waiting messages into one sealed frame per write, the reader that opens and
dispatches frames (cut from the socket by ``pienode.net.reader.FrameReader``, which takes the
connection over from the handshake's streams), keepalive, the link's outstanding requests,
and its clean shutdown. Payloads on the files channel arrive as read-only memoryviews of
their decrypted frame (``NetConfig.view_channels``): a pushed upload is never copied out of
the frame it came in.

Never: raises into the event loop because of what a peer sent (a bad frame is logged in one
line, counted, and closes this link only); logs a payload, a key or a plaintext; blocks the
caller of ``enqueue`` (a full queue is a counted drop).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from typing import Awaitable, Callable

from pienode.buffers import Parts
from pienode.errors import PieError
from pienode.net.config import (
    PRIORITY_CHANNELS,
    NetConfig,
    NetStats,
    PeerUnavailable,
    QueueFull,
    RemoteRequestError,
)
from pienode.net.frames import (
    HEADER_SIZE,
    KIND_ERROR,
    KIND_MESSAGE,
    KIND_PING,
    KIND_REQUEST,
    KIND_RESPONSE,
    TAG_SIZE,
    FrameCipher,
    FrameError,
    encode_header,
    iter_record,
    max_payload,
)
from pienode.net.handshake import SessionKeys
from pienode.net.reader import FrameReader, LinkEnd

log = logging.getLogger("pienode.net")

OnMessage = Callable[[str, int, bytes], "Awaitable[None] | None"]
#: Payloads on ``NetConfig.view_channels`` are read-only memoryviews, others bytes.
OnRequest = Callable[[str, int, "bytes | memoryview"], Awaitable[bytes]]

_MAX_ERROR_TEXT = 300
WRITE_BUFFER_HIGH = 1024 * 1024
CLOSE_GRACE_SECONDS = 2.0


def _error_text(exc: BaseException) -> str:
    # A PieError's message is written for whoever asked; anything else may hold internals,
    # so the peer only learns its type.
    if isinstance(exc, PieError):
        return f"{type(exc).__name__}: {exc.message}"[:_MAX_ERROR_TEXT]
    return type(exc).__name__


class Link:
    """A live link. Created by ``PeerNetwork`` once a handshake succeeds; closed exactly once."""

    def __init__(
        self,
        *,
        node_id: str,
        keys: SessionKeys,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        config: NetConfig,
        stats: NetStats,
        on_message: OnMessage | None,
        on_request: OnRequest | None,
        on_closed: Callable[["Link", str], None],
        outbound: bool,
    ) -> None:
        self.peer_id = keys.peer_id
        self.outbound = outbound
        self._node_id = node_id
        self._reader, self._writer = reader, writer
        self._frames: FrameReader | None = None
        self._sealer = FrameCipher(keys.send_key)
        self._opener = FrameCipher(keys.recv_key)
        self._cfg, self._stats = config, stats
        self._on_message, self._on_request, self._on_closed = on_message, on_request, on_closed
        self._max_payload = max_payload(config.max_frame)
        self._max_record = config.max_frame - TAG_SIZE
        self._coalesce = min(config.coalesce_bytes, self._max_record)
        self._hi: deque[tuple[bytes, bytes | Parts]] = deque()
        self._lo: deque[tuple[bytes, bytes | Parts]] = deque()
        self._hi_bytes = 0
        self._lo_bytes = 0
        self._wakeup = asyncio.Event()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_request_id = 1
        self._inflight = asyncio.Semaphore(config.max_inflight_requests)
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        self._last_recv = self._last_sent = loop.time()
        self._closed = False
        self.closed = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        # A larger write buffer lets the next frame be sealed while the last one is still
        # going out; drain() still bounds it.
        transport = self._writer.transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self._frames = FrameReader(transport, max_frame=self._cfg.max_frame,  # type: ignore[arg-type]
                                   min_frame=TAG_SIZE + HEADER_SIZE, queue_bytes=self._cfg.max_frame)
        # What the handshake's reader already holds past the handshake is the first frames'
        # (asyncio keeps it in ``_buffer``; there is no public way to take it).
        leftover = bytes(self._reader._buffer)
        self._reader._buffer.clear()
        self._frames.take_over(leftover, eof=self._reader._eof or self._reader.exception() is not None
                               or transport.is_closing())
        name = f"{self._node_id}->{self.peer_id}"
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"net-read {name}"),
            asyncio.create_task(self._write_loop(), name=f"net-write {name}"),
            asyncio.create_task(self._keepalive_loop(), name=f"net-keepalive {name}"),
        ]

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self, reason: str, *, abort: bool = False) -> None:
        """Close once: stop the tasks, fail outstanding requests, drop queued messages."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for task in (*self._tasks, *self._handlers):
            if task is not current:
                task.cancel()
        transport = self._writer.transport
        if abort:
            transport.abort()
        else:
            transport.close()
            # close() waits to flush; a peer that stopped reading must not pin the socket.
            asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, transport.abort)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable("link closed", peer=self.peer_id))
        self._pending.clear()
        self._hi.clear()
        self._lo.clear()
        self._hi_bytes = self._lo_bytes = 0
        self._stats.links_closed += 1
        self.closed.set()
        self._on_closed(self, reason)

    async def wait_closed(self) -> None:
        await self.closed.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- sending ---------------------------------------------------------------------

    def enqueue(
        self, kind: int, channel: int, request_id: int, payload: bytes | Parts, *, force: bool = False
    ) -> bool:
        """Queue one message without blocking. False (and a counted drop) if the queue is full.

        ``force`` skips the limits; it is for keepalive pings (at most one per interval).
        """
        if self._closed:
            self._stats.drops_not_connected += 1
            return False
        size = len(payload)
        item = (encode_header(kind, channel, request_id, size), payload)
        if channel in PRIORITY_CHANNELS or kind == KIND_PING:
            if not force and (
                len(self._hi) >= self._cfg.queue_limit
                or self._hi_bytes + size > self._cfg.queue_bytes
            ):
                self._stats.drops_queue_full += 1
                return False
            self._hi.append(item)
            self._hi_bytes += size
        else:
            if not force and (
                len(self._lo) >= self._cfg.queue_limit
                or self._lo_bytes + size > self._cfg.queue_bytes
            ):
                self._stats.drops_queue_full += 1
                return False
            self._lo.append(item)
            self._lo_bytes += size
        self._wakeup.set()
        return True

    def queued(self) -> tuple[int, int]:
        """(priority, bulk) messages waiting to be written."""
        return len(self._hi), len(self._lo)

    async def request(self, channel: int, payload: bytes | Parts, timeout: float) -> bytes:
        """Send a request on this link and wait for its response (see ``PeerNetwork.request``)."""
        if self._closed:
            raise PeerUnavailable("link closed", peer=self.peer_id)
        request_id = self._next_request_id
        self._next_request_id += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            if not self.enqueue(KIND_REQUEST, channel, request_id, payload):
                raise QueueFull("send queue full", peer=self.peer_id)
            self._stats.requests_out += 1
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    def _next_record(self) -> tuple[list[bytes | bytearray | memoryview], int, int]:
        """(the parts of the next record, its size, how many messages it holds)."""
        parts: list[bytes | bytearray | memoryview] = []
        size = count = 0
        for queue in (self._hi, self._lo):
            while queue:
                header, payload = queue[0]
                item = HEADER_SIZE + len(payload)
                if size and size + item > self._coalesce:
                    break
                queue.popleft()
                if queue is self._hi:
                    self._hi_bytes -= len(payload)
                else:
                    self._lo_bytes -= len(payload)
                parts.append(header)
                if isinstance(payload, Parts):
                    parts += payload.parts
                else:
                    parts.append(payload)
                size += item
                count += 1
            if self._hi or size >= self._coalesce:
                break  # a waiting consensus message goes in the next frame, ahead of bulk
        return parts, size, count

    async def _write_loop(self) -> None:
        transport, stats, frames = self._writer.transport, self._stats, self._frames
        assert frames is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._hi and not self._lo:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                parts, size, count = self._next_record()
                frame = self._sealer.seal_framed(parts, size)
                transport.write(frame)
                stats.frames_out += 1
                stats.messages_out += count
                stats.bytes_out += len(frame)
                self._last_sent = loop.time()
                await frames.drain()  # back-pressure: a slow peer fills its queue, not our RAM
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as exc:
            self.close(f"write failed: {type(exc).__name__}", abort=True)
        except Exception as exc:  # never let a link take the loop down
            log.error("%s: link to %s: writer failed: %s", self._node_id, self.peer_id, type(exc).__name__)
            self.close("writer error", abort=True)

    # ---- receiving -------------------------------------------------------------------

    def _bad_frame(self, why: str) -> None:
        self._stats.bad_frames += 1
        log.warning("%s: bad frame from %s (%s); closing link", self._node_id, self.peer_id, why)
        self.close(f"bad frame: {why}", abort=True)

    async def _read_loop(self) -> None:
        frames, stats, views = self._frames, self._stats, self._cfg.view_channels
        assert frames is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    frame = await frames.next_frame()
                except LinkEnd as end:
                    if end.bad:
                        self._bad_frame(end.why)
                    else:
                        self.close(end.why, abort=end.why != "peer closed the link")
                    return
                stats.frames_in += 1
                stats.bytes_in += 4 + len(frame)
                self._last_recv = loop.time()
                if isinstance(frame, bytearray):  # a large frame, in a buffer of its own
                    record: bytes | memoryview = self._opener.open_in_place(frame)
                else:
                    record = self._opener.open(frame)
                for kind, channel, request_id, payload in iter_record(record, views):
                    stats.messages_in += 1
                    if kind == KIND_MESSAGE:
                        # The hot path (PBFT traffic): a plain call, awaiting only what the
                        # consumer hands back, so a sync consumer costs no coroutine per message.
                        pending = self._deliver(channel, payload)
                        if pending is not None:
                            await self._await_delivery(pending)
                    else:
                        await self._dispatch(kind, channel, request_id, payload)
                    if self._closed:
                        return
        except asyncio.CancelledError:
            raise
        except FrameError as exc:
            self._bad_frame(exc.message)
        except Exception as exc:  # never let a link take the loop down
            log.error("%s: link to %s: reader failed: %s", self._node_id, self.peer_id, type(exc).__name__)
            self.close("reader error", abort=True)

    def _handler_failed(self, exc: Exception) -> None:
        self._stats.handler_errors += 1
        log.error("%s: on_message from %s failed: %s", self._node_id, self.peer_id, type(exc).__name__)

    def _deliver(self, channel: int, payload: bytes | memoryview) -> Awaitable[object] | None:
        if self._on_message is None:
            return None
        try:
            result = self._on_message(self.peer_id, channel, payload)
        except Exception as exc:
            self._handler_failed(exc)
            return None
        if result is not None and inspect.isawaitable(result):
            return result
        return None

    async def _await_delivery(self, pending: Awaitable[object]) -> None:
        try:
            await pending  # back-pressure: a slow consumer slows this peer's link only
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._handler_failed(exc)

    async def _dispatch(self, kind: int, channel: int, request_id: int, payload: bytes | memoryview) -> None:
        if kind == KIND_REQUEST:
            self._stats.requests_in += 1
            await self._inflight.acquire()  # bounded concurrency; waiting here slows the peer
            task = asyncio.create_task(self._serve(channel, request_id, payload))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        elif kind in (KIND_RESPONSE, KIND_ERROR):
            future = self._pending.pop(request_id, None)
            if future is None or future.done():
                self._stats.unexpected_responses += 1  # late answer to a timed-out request
            elif kind == KIND_RESPONSE:
                future.set_result(payload)
            else:
                text = bytes(payload[:_MAX_ERROR_TEXT]).decode("utf-8", "replace")
                future.set_exception(RemoteRequestError(text, peer=self.peer_id))
        # KIND_PING: receiving it already refreshed _last_recv.

    async def _serve(self, channel: int, request_id: int, payload: bytes | memoryview) -> None:
        try:
            if self._on_request is None:
                kind, answer = KIND_ERROR, b"no request handler"
            else:
                try:
                    answer = await self._on_request(self.peer_id, channel, payload)
                    kind = KIND_RESPONSE
                    if not isinstance(answer, (bytes, bytearray)):
                        raise TypeError("request handler must return bytes")
                    if len(answer) > self._max_payload:
                        kind, answer = KIND_ERROR, b"response too large"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._stats.handler_errors += 1
                    log.warning(
                        "%s: request from %s on channel %d failed: %s",
                        self._node_id, self.peer_id, channel, type(exc).__name__,
                    )
                    kind, answer = KIND_ERROR, _error_text(exc).encode("utf-8")
            # Not forced: a peer that keeps asking but never reads its answers must hit the
            # queue bound (its requests then time out) rather than grow our memory.
            self.enqueue(kind, channel, request_id, bytes(answer))
        finally:
            self._inflight.release()

    async def _keepalive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval, idle = self._cfg.keepalive_interval, self._cfg.idle_timeout
        tick = min(interval, idle) / 2
        while not self._closed:
            await asyncio.sleep(tick)
            now = loop.time()
            if now - self._last_recv > idle:
                log.warning(
                    "%s: no traffic from %s for %.1fs; closing link", self._node_id, self.peer_id, idle
                )
                self.close("peer silent", abort=True)
                return
            if now - self._last_sent >= interval and not self._hi:
                self.enqueue(KIND_PING, 0, 0, b"", force=True)
