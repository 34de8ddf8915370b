"""Signed HTTP requests: how a registered user proves who is calling a node.

Headers ``X-Pie-User``, ``X-Pie-Time`` (ms), ``X-Pie-Nonce`` and ``X-Pie-Sig``. The
signature (domain ``http``) covers the method, the path with its query, the time, the
nonce, the node the request is meant for, and the SHA-256 of the body (or the word
``stream`` for streamed uploads, whose content is content-addressed anyway). A node
accepts a request only within ``WINDOW_MS`` of its clock and only once per nonce.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from pienode.crypto.keys import PrivateKey, PublicKey
from pienode.encoding import pack, sha256
from pienode.errors import Forbidden

DOMAIN = "http"
WINDOW_MS = 60_000
STREAM = b"stream"


def _payload(method: str, path: str, ts: int, nonce: str, audience: str, body_hash: bytes) -> bytes:
    return pack([method.upper(), path, ts, nonce, audience, body_hash])


def body_digest(body: bytes | None) -> bytes:
    return STREAM if body is None else sha256(body)


def sign_headers(key: PrivateKey, user_id: str, method: str, path: str, audience: str,
                 body: bytes | None) -> dict[str, str]:
    """Headers for a request from ``user_id`` to node ``audience`` (its node id)."""
    ts = time.time_ns() // 1_000_000
    nonce = secrets.token_hex(12)
    sig = key.sign(DOMAIN, _payload(method, path, ts, nonce, audience, body_digest(body)))
    return {"X-Pie-User": user_id, "X-Pie-Time": str(ts), "X-Pie-Nonce": nonce, "X-Pie-Sig": sig.hex()}


class RequestVerifier:
    def __init__(self, audience: str, *, capacity: int = 100_000) -> None:
        self.audience = audience
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def verify(self, headers: Mapping[str, str], method: str, path: str, body: bytes | None,
               key_of: Callable[[str], PublicKey | None]) -> str:
        """Return the verified user id.

        Raises:
            Forbidden: missing, stale, replayed or badly signed.
        """
        get = headers.get
        user, ts_s, nonce, sig_hex = get("X-Pie-User"), get("X-Pie-Time"), get("X-Pie-Nonce"), get("X-Pie-Sig")
        if not (user and ts_s and nonce and sig_hex):
            raise Forbidden("this endpoint needs a request signed by a registered user (or the node's own host)")
        try:
            ts = int(ts_s)
            sig = bytes.fromhex(sig_hex)
        except ValueError:
            raise Forbidden("malformed request signature headers") from None
        now = time.time_ns() // 1_000_000
        if abs(now - ts) > WINDOW_MS or len(nonce) > 64:
            raise Forbidden("request signature expired or from a badly set clock")
        key = key_of(user)
        if key is None:
            raise Forbidden(f"{user} is not a registered user")
        if not key.verify(DOMAIN, _payload(method, path, ts, nonce, self.audience, body_digest(body)), sig):
            raise Forbidden("bad request signature")
        token = f"{user}/{nonce}"
        if token in self._seen:
            raise Forbidden("replayed request")
        self._seen[token] = ts
        while len(self._seen) > self._capacity or (
            self._seen and next(iter(self._seen.values())) < now - 2 * WINDOW_MS
        ):
            self._seen.popitem(last=False)
        return user
