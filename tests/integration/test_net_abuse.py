"""Strangers, garbage and misbehaving peers on the peer port: each costs a counter, nothing more.

Every test ends by checking that the node still serves its real peer (a request round trip),
so "the node keeps working" is asserted, not assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from pienode.crypto.keys import PrivateKey
from pienode.net import CHANNEL_CONSENSUS, CHANNEL_SYNC, NetConfig, PeerAddress, PeerNetwork
from pienode.net.frames import KIND_MESSAGE, FrameCipher, encode_header
from pienode.net.handshake import Initiator

pytestmark = pytest.mark.timeout(60)

# "hospital-0" sorts first, so no node dials it: the tests play it by hand.
RAW, TARGET, REAL = "hospital-0", "hospital-1", "hospital-2"


async def until(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


async def echo(peer: str, channel: int, payload: bytes) -> bytes:
    return b"echo:" + payload


class Env:
    def __init__(self, keys, peers, target: PeerNetwork, real: PeerNetwork, inbox):
        self.keys, self.peers, self.target, self.real, self.inbox = keys, peers, target, real, inbox

    @property
    def port(self) -> int:
        return self.target.listen_port

    async def still_serves_real_peer(self) -> None:
        assert await self.real.request(TARGET, CHANNEL_SYNC, b"ping", timeout=5) == b"echo:ping"
        assert self.target.connected_peers() >= {REAL}

    async def raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def authenticated(self, node_id: str = RAW, key: PrivateKey | None = None):
        """Do a real handshake by hand; return (reader, writer, sealer for our direction)."""
        reader, writer = await self.raw()
        initiator = Initiator(node_id, key or self.keys[RAW], TARGET, self.keys[TARGET].public_key)
        m1 = initiator.start()
        writer.write(len(m1).to_bytes(4, "big") + m1)
        msgs = []
        for _ in range(2):
            length = int.from_bytes(await reader.readexactly(4), "big")
            msgs.append(await reader.readexactly(length))
        a_i = initiator.finish(*msgs)
        writer.write(len(a_i).to_bytes(4, "big") + a_i)
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(4), "big")
        keys = initiator.confirm(await reader.readexactly(length))
        await until(lambda: node_id in self.target.connected_peers())
        return reader, writer, FrameCipher(keys.send_key)


@contextlib.asynccontextmanager
async def env(config: NetConfig | None = None):
    keys = {name: PrivateKey.generate() for name in (RAW, TARGET, REAL)}
    socks = {}
    for name in (TARGET, REAL):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        socks[name] = sock
    ports = {RAW: 9, **{n: s.getsockname()[1] for n, s in socks.items()}}
    peers = {n: PeerAddress("127.0.0.1", ports[n], keys[n].public_key) for n in keys}
    inbox: list[tuple[str, int, bytes]] = []
    target = PeerNetwork(TARGET, keys[TARGET], peers, config=config, on_request=echo,
                         on_message=lambda p, c, b: inbox.append((p, c, b)))
    real = PeerNetwork(REAL, keys[REAL], peers, config=config, on_request=echo)
    await target.start("127.0.0.1", 0, sock=socks[TARGET])
    await real.start("127.0.0.1", 0, sock=socks[REAL])
    try:
        await target.wait_connected({REAL})
        yield Env(keys, peers, target, real, inbox)
    finally:
        await target.stop()
        await real.stop()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True once the node has closed the connection (EOF or reset)."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                return True
    except asyncio.TimeoutError:  # before OSError: TimeoutError is one of those since 3.3
        return False
    except (ConnectionError, OSError):
        return True


# ---- before authentication ----------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # oversized length prefix from ASCII
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello
        b"\x00\x00\x00\x00",  # zero-length message
        b"\x00\x00\x00\x20" + bytes(32),  # right size, not a hello
        b"\xff\xff\xff\xff",  # 4 GiB length: must not be allocated
    ],
)
async def test_garbage_before_handshake_costs_a_counter(garbage):
    async with env() as e:
        reader, writer = await e.raw()
        writer.write(garbage)
        assert await closed_by_peer(reader)
        await until(lambda: e.target.stats.handshake_failures == 1)
        await e.still_serves_real_peer()
        writer.close()


async def test_truncated_handshake_message_costs_a_counter():
    async with env() as e:
        reader, writer = await e.raw()
        writer.write(b"\x00\x00\x00\x64" + bytes(10))  # claims 100 bytes, sends 10, hangs up
        await writer.drain()
        writer.close()
        await until(lambda: e.target.stats.handshake_failures == 1)
        await e.still_serves_real_peer()


async def test_half_open_stranger_times_out():
    async with env(NetConfig(handshake_timeout=0.3)) as e:
        reader, writer = await e.raw()  # connects and says nothing
        assert await closed_by_peer(reader, timeout=5)
        assert e.target.stats.handshake_timeouts == 1 and e.target.stats.handshake_failures == 1
        await e.still_serves_real_peer()
        writer.close()


async def test_pending_handshakes_are_bounded():
    async with env(NetConfig(handshake_timeout=1.0, max_pending_handshakes=4)) as e:
        conns = [await e.raw() for _ in range(10)]
        await until(lambda: e.target.stats.connections_in == 10)
        assert e.target.stats.handshakes_refused_busy == 6
        # While strangers hold every slot the existing link still works...
        await e.still_serves_real_peer()
        # ...and once they time out, a genuine peer can authenticate again.
        await until(lambda: e.target.stats.handshake_timeouts == 4)
        _, writer, _ = await e.authenticated()
        for _, w in conns:
            w.close()
        writer.close()


async def test_unknown_node_id_is_rejected():
    async with env() as e:
        stranger_key = PrivateKey.generate()
        stranger = PeerNetwork("hospital-00", stranger_key, {
            **e.peers, "hospital-00": PeerAddress("127.0.0.1", 9, stranger_key.public_key)})
        await stranger.start("127.0.0.1", 0)
        try:
            await until(lambda: e.target.stats.handshake_failures >= 1)
            await until(lambda: stranger.stats.handshake_failures >= 1)
            assert "hospital-00" not in e.target.connected_peers()
            assert stranger.connected_peers() == set()
        finally:
            await stranger.stop()
        await e.still_serves_real_peer()


async def test_genesis_id_with_wrong_key_is_rejected():
    async with env() as e:
        impostor = PeerNetwork(RAW, PrivateKey.generate(), e.peers)  # RAW's id, not RAW's key
        await impostor.start("127.0.0.1", 0)
        try:
            await until(lambda: e.target.stats.handshake_failures >= 1)
            await until(lambda: e.real.stats.handshake_failures >= 1)
            assert RAW not in e.target.connected_peers() and RAW not in e.real.connected_peers()
            # The impostor never believes itself connected: nobody sent it a confirmation.
            assert impostor.stats.handshakes_ok == 0 and impostor.connected_peers() == set()
            assert e.target.stats.handshakes_ok == 1
        finally:
            await impostor.stop()
        await e.still_serves_real_peer()


async def test_node_that_does_not_hold_the_dialed_key_is_rejected():
    # The real hospital-2 answers at an address that genesis gives to hospital-1's key only.
    async with env() as e:
        wrong = dict(e.peers)
        wrong[REAL] = PeerAddress("127.0.0.1", e.real.listen_port, PrivateKey.generate().public_key)
        dialer = PeerNetwork(RAW, e.keys[RAW], wrong)
        await dialer.start("127.0.0.1", 0)
        try:
            await until(lambda: dialer.stats.handshake_failures >= 2)
            assert REAL not in dialer.connected_peers()
            await dialer.wait_connected({TARGET})  # the honest target is still fine
        finally:
            await dialer.stop()


# ---- after authentication -----------------------------------------------------------------


def sealed(sealer: FrameCipher, *payloads: bytes) -> bytes:
    record = b"".join(encode_header(KIND_MESSAGE, CHANNEL_CONSENSUS, 0, len(p)) + p for p in payloads)
    frame = sealer.seal(record)
    return len(frame).to_bytes(4, "big") + frame


async def test_authenticated_peer_messages_are_delivered():
    async with env() as e:
        _, writer, sealer = await e.authenticated()
        writer.write(sealed(sealer, b"prepare", b"commit"))
        await until(lambda: len(e.inbox) == 2)
        assert e.inbox == [(RAW, CHANNEL_CONSENSUS, b"prepare"), (RAW, CHANNEL_CONSENSUS, b"commit")]
        writer.close()


async def test_tampered_ciphertext_closes_the_link():
    async with env() as e:
        reader, writer, sealer = await e.authenticated()
        frame = bytearray(sealed(sealer, b"commit view=1 seq=2"))
        frame[10] ^= 0x40
        writer.write(bytes(frame))
        assert await closed_by_peer(reader)
        await until(lambda: RAW not in e.target.connected_peers())
        assert e.target.stats.bad_frames == 1 and e.inbox == []
        await e.still_serves_real_peer()


async def test_replayed_frame_closes_the_link():
    async with env() as e:
        reader, writer, sealer = await e.authenticated()
        frame = sealed(sealer, b"commit")
        writer.write(frame + frame)
        assert await closed_by_peer(reader)
        assert e.inbox == [(RAW, CHANNEL_CONSENSUS, b"commit")]  # once, not twice
        assert e.target.stats.bad_frames == 1
        await e.still_serves_real_peer()


async def test_oversized_frame_closes_the_link_without_reading_it():
    async with env(NetConfig(max_frame=128 * 1024)) as e:
        reader, writer, _ = await e.authenticated()
        writer.write((128 * 1024 + 1).to_bytes(4, "big") + bytes(1000))
        assert await closed_by_peer(reader)
        assert e.target.stats.bad_frames == 1
        await e.still_serves_real_peer()


@pytest.mark.parametrize("tail", [b"\x00\x00", b"\x00\x00\x01\x00" + bytes(10)], ids=["prefix", "body"])
async def test_truncated_frame_costs_a_counter(tail):
    async with env() as e:
        _, writer, _ = await e.authenticated()
        writer.write(tail)
        await writer.drain()
        writer.close()
        await until(lambda: e.target.stats.bad_frames == 1)
        assert RAW not in e.target.connected_peers()
        await e.still_serves_real_peer()


async def test_undersized_and_malformed_records_close_the_link():
    async with env() as e:
        reader, writer, sealer = await e.authenticated()
        writer.write((5).to_bytes(4, "big") + bytes(5))
        assert await closed_by_peer(reader)
        reader, writer, sealer = await e.authenticated()
        frame = sealer.seal(encode_header(99, 0, 0, 0))  # authentic, but an unknown kind
        writer.write(len(frame).to_bytes(4, "big") + frame)
        assert await closed_by_peer(reader)
        assert e.target.stats.bad_frames == 2
        await e.still_serves_real_peer()


async def test_silent_authenticated_peer_is_dropped_after_idle_timeout():
    async with env(NetConfig(keepalive_interval=0.05, idle_timeout=1.0)) as e:
        reader, writer, _ = await e.authenticated()  # authenticates, then never sends again
        assert await closed_by_peer(reader, timeout=5)
        assert RAW not in e.target.connected_peers()
        await e.still_serves_real_peer()  # real peers keep their links alive with pings
        writer.close()


async def test_random_garbage_after_handshake_never_breaks_the_node():
    async with env() as e:
        for seed in range(5):
            reader, writer, _ = await e.authenticated()
            writer.write(bytes((seed * 37 + i * 11) % 256 for i in range(3000)))
            writer.write_eof()  # a frame that claims more than was sent is cut short here
            assert await closed_by_peer(reader)
        assert e.target.stats.bad_frames == 5
        await e.still_serves_real_peer()


async def test_a_flood_of_strangers_costs_counters_not_log_lines(caplog):
    caplog.set_level("WARNING", logger="pienode.net")
    async with env() as e:
        for _ in range(60):
            reader, writer = await e.raw()
            writer.write(b"\xff\xff\xff\xff")
            assert await closed_by_peer(reader)
            writer.close()
        await until(lambda: e.target.stats.handshake_failures == 60)
        lines = [r for r in caplog.records if r.name == "pienode.net" and "handshake" in r.getMessage()]
        assert 1 <= len(lines) <= 20
        await e.still_serves_real_peer()


async def test_peer_that_asks_but_never_reads_cannot_grow_our_queues():
    from pienode.net.frames import KIND_REQUEST

    async with env(NetConfig(queue_bytes=200_000)) as e:
        _, writer, sealer = await e.authenticated()
        payload = bytes(10_000)
        for batch in range(40):  # 2,000 requests, ~20 MB of answers that nobody reads
            record = b"".join(
                encode_header(KIND_REQUEST, CHANNEL_SYNC, batch * 50 + i + 1, len(payload)) + payload
                for i in range(50)
            )
            frame = sealer.seal(record)
            writer.write(len(frame).to_bytes(4, "big") + frame)
            await writer.drain()
        await until(lambda: e.target.stats.requests_in == 2000)
        await until(lambda: e.target.stats.drops_queue_full > 0)
        priority, bulk = e.target.queue_depths()[RAW]
        assert bulk * len(payload) <= 200_000 and priority == 0
        await e.still_serves_real_peer()
        writer.close()


async def test_dialing_a_peer_that_accepts_but_never_answers_times_out_and_retries():
    # What a SIGSTOPped node looks like from outside: its kernel still accepts connections.
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    keys = {TARGET: PrivateKey.generate(), "hospital-9": PrivateKey.generate()}
    peers = {
        TARGET: PeerAddress("127.0.0.1", 9, keys[TARGET].public_key),
        "hospital-9": PeerAddress("127.0.0.1", port, keys["hospital-9"].public_key),
    }
    net = PeerNetwork(TARGET, keys[TARGET], peers,
                      config=NetConfig(handshake_timeout=0.2, backoff_max=0.1))
    await net.start("127.0.0.1", 0)
    try:
        await until(lambda: net.stats.handshake_timeouts >= 2 and len(accepted) >= 2)
        assert net.connected_peers() == set() and net.stats.handshakes_ok == 0
    finally:
        await net.stop()
        server.close()
        for writer in accepted:
            writer.close()
