"""Peer links between hospital nodes: authenticated, encrypted, framed, self-healing.

Owns: everything between one node's asyncio loop and another node's, for PBFT messages,
state transfer and the file store's chunk exchange. Never interprets a payload and never
logs one. Start at ``PeerNetwork`` (network.py); the handshake is described in handshake.py.
"""

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
