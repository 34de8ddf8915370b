"""PeerNetwork over real TCP on loopback: links, messages, requests, queues, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field

import pytest

from pienode.crypto.keys import PrivateKey
from pienode.errors import ValidationError
from pienode.net import (
    CHANNEL_CONSENSUS,
    CHANNEL_FILES,
    CHANNEL_SYNC,
    NetConfig,
    PayloadTooLarge,
    PeerAddress,
    PeerNetwork,
    PeerUnavailable,
    RemoteRequestError,
    RequestTimeout,
)

pytestmark = pytest.mark.timeout(60)


async def until(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


@dataclass
class Node:
    name: str
    key: PrivateKey
    sock: socket.socket
    inbox: list[tuple[str, int, bytes]] = field(default_factory=list)
    net: PeerNetwork | None = None

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]


async def echo(peer: str, channel: int, payload: bytes) -> bytes:
    return b"echo:" + payload


@contextlib.asynccontextmanager
async def cluster(n: int, config: NetConfig | None = None, on_request=echo, connect: bool = True):
    nodes = {}
    for i in range(1, n + 1):
        sock = socket.socket()
        # As asyncio does for host/port: lets a restarted node re-listen on this port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        nodes[f"hospital-{i}"] = Node(f"hospital-{i}", PrivateKey.generate(), sock)
    peers = {name: PeerAddress("127.0.0.1", node.port, node.key.public_key) for name, node in nodes.items()}
    for node in nodes.values():
        node.net = PeerNetwork(
            node.name, node.key, peers, config=config,
            on_message=lambda p, c, b, inbox=node.inbox: inbox.append((p, c, b)),
            on_request=on_request,
        )
        await node.net.start("127.0.0.1", 0, sock=node.sock)
    try:
        if connect:
            for node in nodes.values():
                await node.net.wait_connected()
        yield nodes, peers
    finally:
        for node in nodes.values():
            await node.net.stop()


async def test_handshake_and_ordered_messages_both_ways():
    async with cluster(2) as (nodes, _):
        a, b = nodes["hospital-1"], nodes["hospital-2"]
        assert a.net.connected_peers() == {"hospital-2"} and b.net.connected_peers() == {"hospital-1"}
        for i in range(1000):
            assert a.net.send("hospital-2", CHANNEL_CONSENSUS, b"a%d" % i)
        assert b.net.send("hospital-1", CHANNEL_SYNC, b"from b")
        await until(lambda: len(b.inbox) == 1000 and len(a.inbox) == 1)
        assert b.inbox == [("hospital-1", CHANNEL_CONSENSUS, b"a%d" % i) for i in range(1000)]
        assert a.inbox == [("hospital-2", CHANNEL_SYNC, b"from b")]
        assert a.net.stats.handshakes_ok == 1 and b.net.stats.handshakes_ok == 1
        # Coalescing: far fewer frames than messages.
        assert a.net.stats.frames_out < a.net.stats.messages_out
        assert b.net.stats.messages_in == 1000 and a.net.stats.bad_frames == 0


async def test_full_mesh_has_exactly_one_link_per_pair():
    async with cluster(4) as (nodes, _):
        for node in nodes.values():
            assert node.net.connected_peers() == set(nodes) - {node.name}
            assert node.net.stats.handshakes_ok == 3
            assert node.net.stats.reconnects == 0 and node.net.stats.links_closed == 0


async def test_broadcast_reaches_three_peers():
    async with cluster(4) as (nodes, _):
        assert nodes["hospital-3"].net.broadcast(CHANNEL_CONSENSUS, b"view-change") == 3
        others = [n for name, n in nodes.items() if name != "hospital-3"]
        await until(lambda: all(len(n.inbox) == 1 for n in others))
        assert all(n.inbox == [("hospital-3", CHANNEL_CONSENSUS, b"view-change")] for n in others)
        assert nodes["hospital-3"].inbox == []


async def test_request_response_and_concurrent_requests():
    async with cluster(2) as (nodes, _):
        a = nodes["hospital-1"].net
        assert await a.request("hospital-2", CHANNEL_SYNC, b"block 7", timeout=5) == b"echo:block 7"
        answers = await asyncio.gather(
            *(a.request("hospital-2", CHANNEL_FILES, b"chunk %d" % i, timeout=5) for i in range(50))
        )
        assert answers == [b"echo:chunk %d" % i for i in range(50)]
        # Requests work in the other direction too (the accepting side asks the dialer).
        assert await nodes["hospital-2"].net.request("hospital-1", CHANNEL_SYNC, b"x", timeout=5) == b"echo:x"


async def test_request_timeout_then_late_answer_is_ignored():
    release = asyncio.Event()

    async def slow(peer, channel, payload):
        await release.wait()
        return b"late"

    async with cluster(2, on_request=slow) as (nodes, _):
        a = nodes["hospital-1"].net
        with pytest.raises(RequestTimeout):
            await a.request("hospital-2", CHANNEL_SYNC, b"q", timeout=0.2)
        assert a.stats.request_timeouts == 1
        release.set()
        await until(lambda: a.stats.unexpected_responses == 1)
        assert a.connected_peers() == {"hospital-2"}


async def test_remote_handler_error_comes_back_as_error_not_hang():
    async def failing(peer, channel, payload):
        if payload == b"pie":
            raise ValidationError("no such block")
        raise KeyError("internal-secret-detail")

    async with cluster(2, on_request=failing) as (nodes, _):
        a = nodes["hospital-1"].net
        with pytest.raises(RemoteRequestError, match="ValidationError: no such block"):
            await a.request("hospital-2", CHANNEL_SYNC, b"pie", timeout=5)
        with pytest.raises(RemoteRequestError) as info:
            await a.request("hospital-2", CHANNEL_SYNC, b"other", timeout=5)
        assert info.value.message == "KeyError"  # internals stay on the node that failed
        assert nodes["hospital-2"].net.stats.handler_errors == 2
        assert a.connected_peers() == {"hospital-2"}


async def test_request_without_handler_and_to_unconnected_peer():
    async with cluster(2, on_request=None) as (nodes, _):
        a = nodes["hospital-1"].net
        with pytest.raises(RemoteRequestError, match="no request handler"):
            await a.request("hospital-2", CHANNEL_SYNC, b"q", timeout=5)
        with pytest.raises(PeerUnavailable):
            await a.request("hospital-9", CHANNEL_SYNC, b"q", timeout=5)


async def test_link_loss_fails_pending_request_before_its_timeout():
    started = asyncio.Event()

    async def never(peer, channel, payload):
        started.set()
        await asyncio.Event().wait()
        return b""

    async with cluster(2, on_request=never) as (nodes, _):
        a = nodes["hospital-1"].net
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pending = asyncio.create_task(a.request("hospital-2", CHANNEL_SYNC, b"q", timeout=30))
        await started.wait()
        await nodes["hospital-2"].net.stop()
        with pytest.raises(PeerUnavailable):
            await pending
        assert loop.time() - t0 < 10


async def test_reconnect_after_peer_restarts_on_same_port():
    async with cluster(3) as (nodes, peers):
        a, b = nodes["hospital-1"], nodes["hospital-2"]
        c = nodes["hospital-3"]  # b dials c: b restarting exercises both the dialer and acceptor roles
        await b.net.stop()
        await until(lambda: "hospital-2" not in a.net.connected_peers())
        await until(lambda: "hospital-2" not in c.net.connected_peers())
        assert not a.net.send("hospital-2", CHANNEL_CONSENSUS, b"while down")
        assert a.net.stats.drops_not_connected == 1

        b.inbox.clear()
        b.net = PeerNetwork(
            "hospital-2", b.key, peers, on_message=lambda p, ch, m: b.inbox.append((p, ch, m)),
            on_request=echo,
        )
        await b.net.start("127.0.0.1", peers["hospital-2"].port)  # re-listen on the same port
        await b.net.wait_connected()
        await until(lambda: a.net.connected_peers() == {"hospital-2", "hospital-3"})
        assert a.net.stats.reconnects == 1 and c.net.stats.reconnects == 1
        assert a.net.send("hospital-2", CHANNEL_CONSENSUS, b"after")
        assert c.net.send("hospital-2", CHANNEL_CONSENSUS, b"after")
        await until(lambda: len(b.inbox) == 2)
        assert sorted(b.inbox) == [("hospital-1", 0, b"after"), ("hospital-3", 0, b"after")]
        assert await a.net.request("hospital-2", CHANNEL_SYNC, b"r", timeout=5) == b"echo:r"


async def test_queue_bound_is_respected_and_drops_are_counted():
    async with cluster(2, NetConfig(queue_limit=10)) as (nodes, _):
        a, b = nodes["hospital-1"], nodes["hospital-2"]
        # No await between sends: the writer cannot run, so the queue really fills.
        accepted = [a.net.send("hospital-2", CHANNEL_CONSENSUS, b"m%d" % i) for i in range(25)]
        assert accepted == [True] * 10 + [False] * 15
        # The bulk queue is separate: file traffic is still accepted, and bounded too.
        bulk = [a.net.send("hospital-2", CHANNEL_FILES, b"f%d" % i) for i in range(12)]
        assert bulk == [True] * 10 + [False] * 2
        assert a.net.stats.drops_queue_full == 17 and a.net.stats.drops == 17
        await until(lambda: len(b.inbox) == 20)
        assert [m for _, ch, m in b.inbox if ch == CHANNEL_CONSENSUS] == [b"m%d" % i for i in range(10)]


async def test_queue_byte_bound():
    async with cluster(2, NetConfig(queue_bytes=300_000)) as (nodes, _):
        a = nodes["hospital-1"].net
        chunk = bytes(256 * 1024)
        assert a.send("hospital-2", CHANNEL_FILES, chunk)
        assert not a.send("hospital-2", CHANNEL_FILES, chunk)
        assert a.send("hospital-2", CHANNEL_CONSENSUS, b"vote")  # consensus has its own budget


async def test_consensus_goes_ahead_of_queued_bulk_traffic():
    async with cluster(2, NetConfig(coalesce_bytes=1)) as (nodes, _):
        a, b = nodes["hospital-1"], nodes["hospital-2"]
        for i in range(20):
            assert a.net.send("hospital-2", CHANNEL_FILES, bytes(1000))
        assert a.net.send("hospital-2", CHANNEL_CONSENSUS, b"commit")
        await until(lambda: len(b.inbox) == 21)
        assert b.inbox[0] == ("hospital-1", CHANNEL_CONSENSUS, b"commit")


async def test_large_payloads_and_the_size_limit():
    async with cluster(2) as (nodes, _):
        a, b = nodes["hospital-1"], nodes["hospital-2"]
        chunk = bytes(range(256)) * 1024  # 256 KiB
        biggest = b"\x07" * a.net.max_payload
        assert a.net.send("hospital-2", CHANNEL_FILES, chunk)
        assert a.net.send("hospital-2", CHANNEL_SYNC, biggest)
        await until(lambda: len(b.inbox) == 2)
        assert b.inbox[0][2] == chunk and b.inbox[1][2] == biggest
        with pytest.raises(PayloadTooLarge):
            a.net.send("hospital-2", CHANNEL_FILES, biggest + b"!")
        assert await a.net.request("hospital-2", CHANNEL_FILES, chunk, timeout=5) == b"echo:" + chunk


async def test_async_handler_is_awaited_and_handler_errors_do_not_break_the_link():
    got: list[bytes] = []

    async def slow_consumer(peer, channel, payload):
        await asyncio.sleep(0)
        if payload == b"boom":
            raise RuntimeError("handler bug")
        got.append(payload)

    async with cluster(2) as (nodes, peers):
        a, b = nodes["hospital-1"], nodes["hospital-2"]
        b.net._on_message = slow_consumer  # noqa: SLF001 - swap the consumer for this test
        for link in b.net._links.values():  # noqa: SLF001
            link._on_message = slow_consumer  # noqa: SLF001
        for payload in (b"one", b"boom", b"two"):
            assert a.net.send("hospital-2", CHANNEL_CONSENSUS, payload)
        await until(lambda: got == [b"one", b"two"])
        assert b.net.stats.handler_errors == 1
        assert b.net.connected_peers() == {"hospital-1"}


async def test_idle_link_survives_on_keepalives():
    cfg = NetConfig(keepalive_interval=0.05, idle_timeout=0.6)
    async with cluster(2, cfg) as (nodes, _):
        a = nodes["hospital-1"].net
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.8
        while loop.time() < deadline:  # three idle timeouts with no application traffic
            assert a.connected_peers() == {"hospital-2"}
            await asyncio.sleep(0.05)
        assert a.stats.links_closed == 0 and a.stats.frames_out > 0


async def test_stop_closes_everything():
    async with cluster(3) as (nodes, _):
        a = nodes["hospital-1"].net
        await a.stop()
        assert a.connected_peers() == set()
        assert not a.send("hospital-2", CHANNEL_CONSENSUS, b"x")
        await until(lambda: "hospital-1" not in nodes["hospital-2"].net.connected_peers())


async def test_logs_hold_no_payload_and_no_key(caplog):
    marker = b"PATIENT-RECORD-7c1f"

    async def failing(peer, channel, payload):
        raise RuntimeError(payload.decode())

    caplog.set_level(logging.DEBUG, logger="pienode.net")
    async with cluster(2, on_request=failing) as (nodes, _):
        a, b = nodes["hospital-1"], nodes["hospital-2"]
        a.net.send("hospital-2", CHANNEL_CONSENSUS, marker)
        with pytest.raises(RemoteRequestError):
            await a.net.request("hospital-2", CHANNEL_SYNC, marker, timeout=5)
        await until(lambda: len(b.inbox) == 1)
        await b.net.stop()
        await until(lambda: a.net.connected_peers() == set())
        secrets = [n.key.to_bytes().hex() for n in nodes.values()]
    text = caplog.text
    assert "link to hospital-2 up" in text  # the log really was captured
    assert marker.decode() not in text
    assert not any(s in text for s in secrets)


async def test_nodes_started_one_by_one_end_fully_connected():
    async with cluster(4, NetConfig(backoff_max=0.2), connect=False) as (nodes, peers):
        # cluster() started them all; restart them now in reverse order, one at a time,
        # so every dialer first finds its peer down and must retry.
        for node in nodes.values():
            await node.net.stop()
        for name in sorted(nodes, reverse=True):
            node = nodes[name]
            node.net = PeerNetwork(name, node.key, peers, config=NetConfig(backoff_max=0.2),
                                   on_message=lambda p, c, b, inbox=node.inbox: inbox.append((p, c, b)))
            await node.net.start("127.0.0.1", peers[name].port)
            await asyncio.sleep(0.05)  # stagger starts (a schedule, not a wait for a condition)
        for node in nodes.values():
            await node.net.wait_connected()
        assert all(len(n.net.connected_peers()) == 3 for n in nodes.values())
        nodes["hospital-4"].net.broadcast(CHANNEL_CONSENSUS, b"new-view")
        await until(lambda: all(len(nodes[f"hospital-{i}"].inbox) == 1 for i in (1, 2, 3)))


async def test_restart_of_every_node_at_once_relinks_everything():
    async with cluster(4) as (nodes, peers):
        for node in nodes.values():
            await node.net.stop()
        for name, node in nodes.items():
            node.net = PeerNetwork(name, node.key, peers, on_request=echo)
        await asyncio.gather(*(n.net.start("127.0.0.1", peers[name].port) for name, n in nodes.items()))
        for node in nodes.values():
            await node.net.wait_connected()
            assert node.net.stats.handshakes_ok == 3  # one link per pair, no duplicates
        assert await nodes["hospital-4"].net.request("hospital-1", CHANNEL_SYNC, b"x", timeout=5) == b"echo:x"


async def test_bad_channel_is_a_caller_error():
    async with cluster(2) as (nodes, _):
        with pytest.raises(ValueError):
            nodes["hospital-1"].net.send("hospital-2", 256, b"x")
        with pytest.raises(ValueError):
            await nodes["hospital-1"].net.request("hospital-2", -1, b"x", timeout=1)
