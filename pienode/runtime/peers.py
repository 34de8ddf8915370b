"""Wiring of the peer network: which channel goes to which subsystem.

Channels: consensus (PBFT messages, to the driver), mempool gossip (to admission), sync
(block fetch for state transfer: served here from the ledger), files (chunk exchange: served
by the file store when one is attached). Pending transactions are sent again to a peer whose
link comes (back) up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from pienode.encoding import pack, unpack
from pienode.errors import ValidationError
from pienode.net.config import CHANNEL_CONSENSUS, CHANNEL_FILES, CHANNEL_SYNC, NetConfig, PeerAddress
from pienode.net.network import PeerNetwork

if TYPE_CHECKING:
    from pienode.runtime.node import Node

#: Most bytes of blocks returned by one sync request.
MAX_SYNC_RESPONSE = 3 * 1024 * 1024
MAX_SYNC_BLOCKS = 256
#: How often the link set is checked for peers that came (back) up.
REGOSSIP_POLL_S = 0.25


async def start_network(node: "Node") -> PeerNetwork:
    from pienode.runtime.node import CHANNEL_MEMPOOL

    peers = {
        n.node_id: PeerAddress(n.host, n.peer_port, n.public_key) for n in node.genesis.nodes
    }

    def on_message(peer: str, channel: int, payload: bytes) -> None:
        if channel == CHANNEL_CONSENSUS:
            node.driver.on_peer_message(peer, payload)
        elif channel == CHANNEL_MEMPOOL:
            node.on_gossip(peer, payload)

    async def on_request(peer: str, channel: int, payload: bytes) -> bytes:
        if channel == CHANNEL_SYNC:
            return serve_sync(node, payload)
        if channel == CHANNEL_FILES and node.files is not None:
            return await node.files.handle_peer_request(peer, payload)
        raise ValidationError(f"no service on channel {channel}")

    cfg = dataclasses.replace(NetConfig(), max_frame=node.cfg.peer.max_frame_bytes,
                              network_id=node.genesis.chain_id)
    net = PeerNetwork(node.node_id, node.key, peers, on_message=on_message, on_request=on_request, config=cfg)
    await net.start(node.cfg.peer.host, node.cfg.peer.port)
    node._spawn(regossip_on_link_up(node, net), "regossip")
    return net


async def regossip_on_link_up(node: "Node", net: PeerNetwork) -> None:
    """Send our pending transactions to every peer whose link comes (back) up.

    Gossip is fire-and-forget to the peers linked at that moment, so a transaction admitted
    while a link was down (every node restarting at once, a peer restarting) never reaches
    that peer. If it also missed the primary's PRE-PREPARE, it has nothing pending, its
    request timer never runs, and it never joins the view change that the node holding the
    transaction starts: the cluster stalls with f+1 honest replicas unaware of the request.
    """
    from pienode.runtime.node import CHANNEL_MEMPOOL

    linked: set[str] = set()
    budget = max(4096, node.cfg.peer.max_frame_bytes // 2)
    while True:
        await asyncio.sleep(REGOSSIP_POLL_S)
        now = net.connected_peers()
        fresh, linked = now - linked, set(now)
        if not fresh or not len(node.mempool):
            continue
        for chunk in _chunks(node.mempool.pending(), budget):
            frame = pack(chunk)
            for peer in sorted(fresh):
                net.send(peer, CHANNEL_MEMPOOL, frame)


def _chunks(items: list[bytes], budget: int) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    cur: list[bytes] = []
    size = 0
    for item in items:
        if cur and size + len(item) + 8 > budget:
            out.append(cur)
            cur, size = [], 0
        cur.append(item)
        size += len(item) + 8
    if cur:
        out.append(cur)
    return out


def serve_sync(node: "Node", payload: bytes) -> bytes:
    req: Any = unpack(payload, max_bytes=4096)
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        raise ValidationError("malformed sync request")
    ledger = node.ledger
    if req["op"] == "head":
        head = ledger.head
        return pack({"height": head.height, "hash": head.hash()})
    if req["op"] == "blocks":
        start, stop = req.get("from"), req.get("to")
        if not isinstance(start, int) or not isinstance(stop, int) or start < 1 or stop < start:
            raise ValidationError("malformed block range")
        out: list[bytes] = []
        size = 0
        for h in range(start, min(stop, ledger.height, start + MAX_SYNC_BLOCKS - 1) + 1):
            raw = ledger.block_raw(h)
            if raw is None or (out and size + len(raw) > MAX_SYNC_RESPONSE):
                break
            out.append(raw)
            size += len(raw)
        return pack(out)
    raise ValidationError(f"unknown sync op {req['op']!r}")
