"""Framing between the engine and its worker processes: 4-byte length + msgpack, on pipes.

Owns the frame format and blocking read/write with a deadline. Must never unpickle or
evaluate anything: frames are plain msgpack (no ext types), bounded in size.
"""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any

import msgpack

MAX_FRAME = 64 * 1024 * 1024
_LEN = struct.Struct(">I")


class WireClosed(Exception):
    """The other end closed the pipe (worker died or parent went away)."""


class WireTimeout(Exception):
    """No complete frame before the deadline."""


def encode(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def write_frame(fd: int, obj: Any) -> None:
    data = memoryview(encode(obj))
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
    except (BrokenPipeError, ConnectionResetError):
        raise WireClosed() from None


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireTimeout()
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise WireTimeout()
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise WireClosed()
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """Read one frame; ``deadline`` is a ``time.monotonic()`` value or None (block)."""
    (n,) = _LEN.unpack(_read_exact(fd, 4, deadline))
    if n > MAX_FRAME:
        raise WireClosed()
    return msgpack.unpackb(_read_exact(fd, n, deadline), raw=False, use_list=True,
                           strict_map_key=False)
