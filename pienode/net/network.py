"""``PeerNetwork``: the node's links to every other genesis node, kept alive.

Owns: the listening socket, the handshake on each new connection (bounded in number and in
time), one outbound dialer per peer that this node is responsible for, the table of live
links (one per peer), and the public send / broadcast / request surface that the node
runtime uses for PBFT, state transfer and the file store's chunk exchange.

Who dials whom: the node whose id sorts lower dials; the other only accepts. So two nodes
never race to open two links. If an authenticated link arrives for a peer that already has
one (the peer restarted before we noticed its old link die), the new link replaces the old.

Never: raises into the event loop because of a peer or a stranger (each failure is one log
line and a counter); logs keys or payloads; accepts a node that is not in its genesis map.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
from typing import Mapping

from pienode.buffers import Parts
from pienode.crypto.keys import PrivateKey, PublicKey
from pienode.net.config import (
    NetConfig,
    NetStats,
    PayloadTooLarge,
    PeerAddress,
    PeerUnavailable,
    RequestTimeout,
)
from pienode.net.frames import KIND_MESSAGE, max_payload
from pienode.net.handshake import (
    MAX_HANDSHAKE_MESSAGE,
    HandshakeError,
    Initiator,
    Responder,
    SessionKeys,
)
from pienode.net.link import Link, OnMessage, OnRequest

log = logging.getLogger("pienode.net")

#: asyncio's StreamReader stops reading the socket once it buffers twice this much. The
#: default (64 KiB) makes a 256 KiB chunk pause and resume the socket several times.
STREAM_LIMIT = 1024 * 1024


async def _read_handshake_message(reader: asyncio.StreamReader) -> bytes:
    prefix = await reader.readexactly(4)
    length = int.from_bytes(prefix, "big")
    if not 0 < length <= MAX_HANDSHAKE_MESSAGE:
        # Garbage (an HTTP request, a TLS hello, random bytes) lands here on its first bytes.
        raise HandshakeError(f"bad handshake length {length}")
    return await reader.readexactly(length)


def _framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(4, "big") + m for m in messages)


def _abort(writer: asyncio.StreamWriter) -> None:
    try:
        writer.transport.abort()
    except Exception:  # already gone: nothing left to release
        pass


class _LogBudget:
    """At most ``limit`` lines per ``window`` seconds, so a flood of strangers cannot fill the
    disk with log lines; the next line that gets through says how many were swallowed."""

    __slots__ = ("_limit", "_window", "_start", "_used", "_suppressed")

    def __init__(self, limit: int = 20, window: float = 10.0) -> None:
        self._limit, self._window = limit, window
        self._start, self._used, self._suppressed = float("-inf"), 0, 0

    def take(self, now: float) -> tuple[bool, int]:
        """Returns (may log, lines suppressed since the last one logged)."""
        if now - self._start >= self._window:
            self._start, self._used = now, 0
        if self._used >= self._limit:
            self._suppressed += 1
            return False, 0
        self._used += 1
        suppressed, self._suppressed = self._suppressed, 0
        return True, suppressed


class PeerNetwork:
    """Authenticated, encrypted, self-healing links to the consortium's other nodes.

    Use it from the event loop's thread only (``send`` and ``broadcast`` are plain calls that
    never block; ``request``, ``start`` and ``stop`` are coroutines).

    Args:
        node_id: this node's id in genesis.
        key: this node's secp256k1 signing key (its public key is in genesis).
        peers: every genesis node by id (this node may be included; it is skipped).
        on_message: called as ``on_message(peer_id, channel, payload)`` for each one-way
            message, in order per peer; may be async (awaited: a slow consumer slows only
            that peer's link). Exceptions are logged by type and counted, never propagated.
        on_request: ``await on_request(peer_id, channel, payload) -> bytes`` answers a peer's
            request; an exception goes back to the requester as ``RemoteRequestError``.
        config: tuning (``NetConfig``); ``max_frame`` and ``queue_limit`` override it.
    """

    def __init__(
        self,
        node_id: str,
        key: PrivateKey,
        peers: Mapping[str, PeerAddress],
        *,
        on_message: OnMessage | None = None,
        on_request: OnRequest | None = None,
        max_frame: int | None = None,
        queue_limit: int | None = None,
        config: NetConfig | None = None,
    ) -> None:
        cfg = config or NetConfig()
        if max_frame is not None:
            cfg = dataclasses.replace(cfg, max_frame=max_frame)
        if queue_limit is not None:
            cfg = dataclasses.replace(cfg, queue_limit=queue_limit)
        self.config = cfg
        self.node_id = node_id
        self._key = key
        self._peers = {pid: addr for pid, addr in peers.items() if pid != node_id}
        self._peer_keys: dict[str, PublicKey] = {pid: a.public_key for pid, a in self._peers.items()}
        self._on_message, self._on_request = on_message, on_request
        self._max_payload = max_payload(self.config.max_frame)
        self._links: dict[str, Link] = {}
        self._ever_linked: set[str] = set()
        self._stats = NetStats()
        self._server: asyncio.base_events.Server | None = None
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._handshakes: set[asyncio.Task[object]] = set()
        self._stopping = False
        self._log_budget = _LogBudget()
        self.listen_port: int | None = None

    # ---- public surface ----------------------------------------------------------------

    @property
    def stats(self) -> NetStats:
        return self._stats

    @property
    def max_payload(self) -> int:
        """Largest payload ``send``/``request`` accept (``max_frame`` minus framing)."""
        return self._max_payload

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Messages waiting per connected peer: (priority, bulk). For metrics."""
        return {pid: link.queued() for pid, link in self._links.items() if not link.is_closed}

    def connected_peers(self) -> set[str]:
        return {pid for pid, link in self._links.items() if not link.is_closed}

    async def start(self, listen_host: str, listen_port: int, *, sock: socket.socket | None = None) -> None:
        """Listen for peers and start dialing the peers this node is responsible for.

        Args:
            listen_host, listen_port: where to listen; port 0 lets the OS choose (see
                ``listen_port`` afterwards).
            sock: an already bound socket to listen on instead (host and port are ignored);
                give it SO_REUSEADDR if a restarted node must re-listen on the same port.
        """
        if self._server is not None:
            raise RuntimeError("PeerNetwork already started")
        self._stopping = False
        if sock is not None:
            self._server = await asyncio.start_server(self._on_inbound, sock=sock, limit=STREAM_LIMIT)
        else:
            self._server = await asyncio.start_server(
                self._on_inbound, listen_host, listen_port, reuse_address=True, limit=STREAM_LIMIT
            )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        for peer_id in sorted(self._peers):
            if self.node_id < peer_id:
                self._dialers[peer_id] = asyncio.create_task(
                    self._dial_loop(peer_id), name=f"net-dial {self.node_id}->{peer_id}"
                )
        log.info("%s: peer network listening on port %d", self.node_id, self.listen_port)

    async def stop(self) -> None:
        """Close the listener, every link and every dialer; fail outstanding requests."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[object]] = [*self._dialers.values(), *self._handshakes]
        for task in tasks:
            task.cancel()
        links = list(self._links.values())
        for link in links:
            link.close("node stopping")
        await asyncio.gather(*tasks, *(link.wait_closed() for link in links), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None
        self._dialers.clear()
        self._links.clear()

    def _check(self, channel: int, payload: bytes | Parts) -> None:
        if not 0 <= channel <= 255:
            raise ValueError(f"channel must be 0..255, not {channel}")
        if len(payload) > self._max_payload:
            raise PayloadTooLarge(f"payload of {len(payload)} bytes exceeds {self._max_payload}")

    def send(self, peer_id: str, channel: int, payload: bytes) -> bool:
        """Queue a one-way message; never blocks.

        Returns:
            True if queued; False (and a counted drop) if the peer has no live link or its
            queue for this channel's priority class is full.

        Raises:
            PayloadTooLarge: ``payload`` exceeds ``max_payload`` (a caller's bug).
            ValueError: ``channel`` is not in 0..255.
        """
        self._check(channel, payload)
        link = self._links.get(peer_id)
        if link is None:
            self._stats.drops_not_connected += 1
            return False
        return link.enqueue(KIND_MESSAGE, channel, 0, payload)

    def broadcast(self, channel: int, payload: bytes) -> int:
        """``send`` to every genesis peer; returns how many accepted the message."""
        return sum(self.send(peer_id, channel, payload) for peer_id in self._peers)

    async def request(self, peer_id: str, channel: int, payload: bytes | Parts, timeout: float) -> bytes:
        """Ask one peer and wait for its answer. ``payload`` may be ``Parts`` (sent back to
        back, never joined); on a channel of ``NetConfig.view_channels`` the answer is a
        read-only memoryview.

        Raises:
            PeerUnavailable: no live link, or the link dropped before the answer came.
            RequestTimeout: no answer within ``timeout`` seconds.
            RemoteRequestError: the peer's handler failed (its message says why).
            QueueFull: the peer's send queue is full.
            PayloadTooLarge: ``payload`` exceeds ``max_payload``.
        """
        self._check(channel, payload)
        link = self._links.get(peer_id)
        if link is None or link.is_closed:
            raise PeerUnavailable("no link to peer", peer=peer_id)
        try:
            return await link.request(channel, payload, timeout)
        except asyncio.TimeoutError:
            self._stats.request_timeouts += 1
            raise RequestTimeout(f"no answer within {timeout}s", peer=peer_id) from None

    async def wait_connected(self, peers: set[str] | None = None, timeout: float = 10.0) -> None:
        """Wait until every peer in ``peers`` (default: all) has a live link.

        Raises:
            PeerUnavailable: not all connected within ``timeout``.
        """
        want = set(self._peers) if peers is None else set(peers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not want <= self.connected_peers():
            if loop.time() >= deadline:
                missing = sorted(want - self.connected_peers())
                raise PeerUnavailable(f"peers not connected: {', '.join(missing)}")
            await asyncio.sleep(0.01)

    # ---- links ---------------------------------------------------------------------------

    def _install(
        self,
        keys: SessionKeys,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        outbound: bool,
    ) -> Link:
        peer_id = keys.peer_id
        old = self._links.get(peer_id)
        if old is not None:
            old.close("replaced by a new link")
        if peer_id in self._ever_linked:
            self._stats.reconnects += 1
        self._ever_linked.add(peer_id)
        self._stats.handshakes_ok += 1
        link = Link(
            node_id=self.node_id, keys=keys, reader=reader, writer=writer, config=self.config,
            stats=self._stats, on_message=self._on_message, on_request=self._on_request,
            on_closed=self._link_closed, outbound=outbound,
        )
        self._links[peer_id] = link
        link.start()
        log.info("%s: link to %s up (%s)", self.node_id, peer_id, "dialed" if outbound else "accepted")
        return link

    def _link_closed(self, link: Link, reason: str) -> None:
        if self._links.get(link.peer_id) is link:
            del self._links[link.peer_id]
        if not self._stopping:
            log.info("%s: link to %s down: %s", self.node_id, link.peer_id, reason)

    def _handshake_failed(self, where: str, exc: BaseException) -> None:
        self._stats.handshake_failures += 1
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            self._stats.handshake_timeouts += 1
            why = "timed out"
        elif isinstance(exc, HandshakeError):
            why = exc.message
        elif isinstance(exc, asyncio.IncompleteReadError):
            why = "connection closed mid-handshake"
        else:
            why = type(exc).__name__
        allowed, suppressed = self._log_budget.take(asyncio.get_running_loop().time())
        if allowed:
            log.warning(
                "%s: handshake with %s failed: %s%s", self.node_id, where, why,
                f" ({suppressed} more since, not logged)" if suppressed else "",
            )

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._stats.connections_in += 1
        if self._stopping or len(self._handshakes) >= self.config.max_pending_handshakes:
            self._stats.handshakes_refused_busy += 1
            self._stats.handshake_failures += 1
            if self._log_budget.take(asyncio.get_running_loop().time())[0]:
                log.warning("%s: too many pending handshakes; refusing a connection", self.node_id)
            _abort(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._handshakes.add(task)
        peername = writer.get_extra_info("peername")
        where = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else "unknown"
        try:
            try:
                keys = await asyncio.wait_for(self._respond(reader, writer), self.config.handshake_timeout)
            except asyncio.CancelledError:
                _abort(writer)
                raise
            except Exception as exc:
                self._handshake_failed(f"inbound {where}", exc)
                _abort(writer)
                return
            if self._stopping:
                _abort(writer)
                return
            self._install(keys, reader, writer, outbound=False)
        finally:
            self._handshakes.discard(task)

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> SessionKeys:
        responder = Responder(self.node_id, self._key, self._peer_keys, self.config.network_id)
        m2, a_r = responder.respond(await _read_handshake_message(reader))
        writer.write(_framed(m2, a_r))
        await writer.drain()
        keys, fin = responder.finish(await _read_handshake_message(reader))
        writer.write(_framed(fin))
        await writer.drain()
        return keys

    async def _dial(self, peer_id: str) -> tuple[SessionKeys, asyncio.StreamReader, asyncio.StreamWriter]:
        addr = self._peers[peer_id]
        reader, writer = await asyncio.open_connection(addr.host, addr.port, limit=STREAM_LIMIT)
        try:
            initiator = Initiator(self.node_id, self._key, peer_id, addr.public_key, self.config.network_id)
            writer.write(_framed(initiator.start()))
            await writer.drain()
            m2 = await _read_handshake_message(reader)
            a_r = await _read_handshake_message(reader)
            writer.write(_framed(initiator.finish(m2, a_r)))
            await writer.drain()
            keys = initiator.confirm(await _read_handshake_message(reader))
        except BaseException:
            _abort(writer)
            raise
        return keys, reader, writer

    async def _dial_loop(self, peer_id: str) -> None:
        cfg = self.config
        delay = cfg.backoff_initial
        while not self._stopping:
            current = self._links.get(peer_id)
            if current is not None and not current.is_closed:
                # A link the peer opened to us (it should not, but a stale config might):
                # keep it rather than replace it and have the two sides take turns.
                await current.closed.wait()
                continue
            try:
                keys, reader, writer = await asyncio.wait_for(self._dial(peer_id), cfg.handshake_timeout)
            except asyncio.CancelledError:
                raise
            except TimeoutError as exc:  # before OSError, of which it is a subclass
                # Connected but no answer (a paused peer's kernel still accepts): worth a line.
                self._handshake_failed(f"outbound {peer_id}", exc)
            except (ConnectionError, OSError) as exc:
                # The peer is down or restarting: expected, so not worth a warning each time.
                log.debug("%s: dial %s failed: %s", self.node_id, peer_id, type(exc).__name__)
            except Exception as exc:
                self._handshake_failed(f"outbound {peer_id}", exc)
            else:
                link = self._install(keys, reader, writer, outbound=True)
                delay = cfg.backoff_initial
                await link.closed.wait()
                if self._stopping:
                    return
            # Jitter in [delay/2, delay] so that nodes restarted together spread out.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, cfg.backoff_max)
