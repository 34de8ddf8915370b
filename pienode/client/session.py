"""A user's session with one hospital node: the wallet, the node, the consortium's genesis.

Every transaction is signed here and submitted with ``?wait=1``; every read-only contract
call and file transfer is a signed request, so the node knows who asks.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pienode.cli.client import NodeClient, RemoteError
from pienode.cli.wallet import Wallet
from pienode.client.rawget import RawGetter, Unsupported
from pienode.crypto.pre import PrePublicKey, PreSecretKey
from pienode.errors import Forbidden, PieError, ValidationError
from pienode.identity.genesis import Genesis
from pienode.identity.reqsig import sign_headers
from pienode.ledger.tx import Transaction

#: The highest committed height this process has seen, per chain; every request asks the
#: node to have reached it first, so what one session committed is visible to the next
#: session's reads on any hospital (read-your-writes across nodes).
_seen: dict[str, int] = {}
MIN_HEIGHT_HEADER = "X-Pie-Min-Height"


def saw_height(chain_id: str, height: int) -> None:
    _seen[chain_id] = max(_seen.get(chain_id, 0), height)


def record_from_json(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as the node's JSON gives it, with its key fields as bytes."""
    for k in ("capsule", "delegating_key", "verifying_key"):
        rec[k] = bytes.fromhex(rec[k])
    rec["sealed_keys"] = {u: bytes.fromhex(v) for u, v in rec["sealed_keys"].items()}
    return rec


class Refused(PieError):
    """The chain refused what the user asked (a deterministic, recorded refusal)."""

    status = 403


class Session:
    def __init__(self, wallet: Wallet, node_url: str, *, timeout_s: float = 600.0) -> None:
        self.wallet = wallet
        self.client = NodeClient(node_url, timeout_s=timeout_s)
        self.genesis: Genesis | None = None
        self.node_id = ""
        self._raw: RawGetter | None = None
        self._raw_tried = False
        self._enc_sk: PreSecretKey | None = None

    async def __aenter__(self) -> "Session":
        await self.client.__aenter__()
        try:
            self.genesis = Genesis.from_json(json.dumps(await self.client.get("/genesis")))
            self.node_id = (await self.client.get("/status"))["node_id"]
            chain = self.genesis.chain_id
            self.client.extra_headers = lambda: {MIN_HEIGHT_HEADER: str(_seen.get(chain, 0))}
        except BaseException:
            await self.client.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._raw is not None:
            self._raw.close()
        await self.client.__aexit__(*exc)

    def raw_getter(self) -> RawGetter | None:
        """The lean GET path to this node for downloads (``rawget``); None for a node it
        cannot speak to (https)."""
        if not self._raw_tried:
            self._raw_tried = True
            try:
                self._raw = RawGetter(self.client.base)
            except Unsupported:
                self._raw = None
        return self._raw

    # -- identity ------------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return self.wallet.user_id

    @property
    def enc_sk(self) -> PreSecretKey:
        # Parsed once per session (and its public key derived at most once): the wallet's
        # key does not change under a session.
        if self._enc_sk is None:
            self._enc_sk = PreSecretKey.from_bytes(self.wallet.enc_key.to_bytes())
        return self._enc_sk

    @property
    def enc_pk(self) -> PrePublicKey:
        return self.enc_sk.public_key

    def node_keys(self) -> list[PrePublicKey]:
        assert self.genesis is not None
        return [PrePublicKey.from_bytes(n.enc_key) for n in self.genesis.nodes]

    def headers(self, method: str, path: str, body: bytes | None, audience: str | None = None) -> dict[str, str]:
        assert self.genesis is not None
        return {**sign_headers(self.wallet.sign_key, self.user_id, method, path, audience or self.node_id, body),
                MIN_HEIGHT_HEADER: str(_seen.get(self.genesis.chain_id, 0))}

    # -- chain ---------------------------------------------------------------------------

    async def user(self, user_id: str) -> dict[str, Any]:
        try:
            return await self.client.get(f"/users/{user_id}")
        except RemoteError as exc:
            if exc.status == 404:
                raise ValidationError(f"{user_id} is not a registered user") from None
            raise

    async def record(self, record_id: str) -> dict[str, Any]:
        try:
            rec = await self.client.get(f"/records/{record_id}")
        except RemoteError as exc:
            if exc.status == 404:
                raise ValidationError(f"no record {record_id}") from None
            raise
        return record_from_json(rec)

    async def submit(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Sign, submit, wait for the commit; returns the receipt's result.

        Raises:
            Refused: the transaction committed with a failed receipt.
        """
        assert self.genesis is not None
        self.wallet.require_registered()
        tx = Transaction.create(self.wallet.sign_key, chain_id=self.genesis.chain_id, kind=kind,
                                sender=self.user_id, timestamp_ms=time.time_ns() // 1_000_000, body=body)
        out = await self.client.submit(tx.encode())
        if out.get("status") != "committed":
            raise PieError(f"transaction {out['tx_id']} is not committed yet; check it with GET /txs/{out['tx_id']}")
        receipt = out["receipt"]
        saw_height(self.genesis.chain_id, out["height"])
        if not receipt["ok"]:
            raise Refused(receipt["error"] or receipt["code"])
        return {"tx_id": out["tx_id"], "height": out["height"], "result": receipt["result"],
                "events": receipt["events"]}

    async def call(self, contract: str, fn: str, args: dict[str, Any]) -> Any:
        """A signed read-only contract call answered by this node."""
        path = f"/contracts/{contract}/call"
        body = json.dumps({"fn": fn, "args": args}).encode()
        try:
            out = await self.client.request("POST", path, data=body,
                                            headers={**self.headers("POST", path, body),
                                                     "Content-Type": "application/json"})
        except RemoteError as exc:
            if exc.status == 403:
                raise Forbidden(exc.message) from None
            raise
        return out["value"]

    async def contract_tx(self, contract: str, fn: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self.submit("contract_call", {"contract": contract, "fn": fn, "args": args})
