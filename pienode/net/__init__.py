"""Peer links between hospital nodes: authenticated, encrypted, framed, self-healing.

Owns: everything between one node's asyncio loop and another node's, for PBFT messages,
state transfer and the file store's chunk exchange. Never interprets a payload and never
logs one. Start at ``PeerNetwork`` (network.py); the handshake is described in handshake.py.

Typical use by the node runtime::

    net = PeerNetwork(node_id, node_key, {pid: PeerAddress(host, port, pubkey) for ...},
                      on_message=replica_inbox, on_request=serve_sync_or_chunk)
    await net.start("0.0.0.0", peer_port)
    net.broadcast(CHANNEL_CONSENSUS, pack(prepare))          # never blocks; False = dropped
    block = await net.request(peer, CHANNEL_SYNC, pack(ask), timeout=2.0)   # NetError subclasses
    ...
    await net.stop()
"""

from pienode.buffers import Parts
from pienode.net.config import (
    CHANNEL_CONSENSUS,
    CHANNEL_FILES,
    CHANNEL_SYNC,
    NetConfig,
    NetStats,
    PayloadTooLarge,
    PeerAddress,
    PeerUnavailable,
    QueueFull,
    RemoteRequestError,
    RequestTimeout,
)
from pienode.net.handshake import HandshakeError
from pienode.net.frames import FrameError
from pienode.net.network import PeerNetwork

__all__ = [
    "Parts",
    "CHANNEL_CONSENSUS",
    "CHANNEL_FILES",
    "CHANNEL_SYNC",
    "FrameError",
    "HandshakeError",
    "NetConfig",
    "NetStats",
    "PayloadTooLarge",
    "PeerAddress",
    "PeerNetwork",
    "PeerUnavailable",
    "QueueFull",
    "RemoteRequestError",
    "RequestTimeout",
]
