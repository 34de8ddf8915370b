"""A real one-node consortium (a legal f = 0 PBFT) on loopback: the API and its refusals."""

from __future__ import annotations

import base64
import os

import pytest

from pienode.crypto.keys import PrivateKey
from pienode.ledger.verify import verify_home

STATUS_FIELDS = {"node_id", "height", "last_block_hash", "view", "primary", "peers_connected", "checkpoint"}


async def register(rn, role="patient", name="Alice Example"):
    async with rn.http.post(rn.url + "/users/register", json={
        "role": role, "name": name,
        "sign_key": PrivateKey().public_key.hex(), "enc_key": PrivateKey().public_key.hex(),
    }) as r:
        return r.status, await r.json()


async def test_health_and_status(one_node):
    async with one_node.http.get(one_node.url + "/health") as r:
        assert r.status == 200 and await r.json() == {"ok": True}
    async with one_node.http.get(one_node.url + "/status") as r:
        st = await r.json()
    assert STATUS_FIELDS <= set(st)
    assert st["node_id"] == "hospital-1" and st["primary"] == "hospital-1" and st["height"] == 0


async def test_registration_commits_and_keeps_the_name_off_chain(one_node):
    status, out = await register(one_node, name="Jane Unique-Name")
    assert status == 201, out
    assert out["user_id"].startswith("pat-") and out["height"] == 1
    async with one_node.http.get(one_node.url + "/blocks/1") as r:
        block = await r.json()
    assert block["txs"][0]["kind"] == "register_user" and block["receipts"][0]["ok"]
    data_dir = one_node.home / "data" / "ledger"
    chain_bytes = b"".join(
        v for k, v in one_node.node.kv.iterate() if not k.startswith(b"P")
    )
    assert b"Jane Unique-Name" not in chain_bytes
    async with one_node.http.get(one_node.url + f"/users/{out['user_id']}") as r:
        cert = await r.json()
    assert cert["role"] == "patient" and "name" not in cert
    assert data_dir.exists()


@pytest.mark.parametrize(
    "body, ctype",
    [
        (b"garbage", "application/octet-stream"),
        (b"", "application/octet-stream"),
        (b"{}", "application/json"),
        (b'{"tx": "not base64!"}', "application/json"),
        (b'{"txs": []}', "application/json"),
        (b"\x93\x01\x02", "application/msgpack"),
        (os.urandom(3 * 1024 * 1024), "application/octet-stream"),
    ],
    ids=["garbage", "empty", "empty-object", "bad-base64", "no-txs", "bad-msgpack", "3MB"],
)
async def test_bad_transactions_get_4xx_and_change_nothing(one_node, body, ctype):
    async with one_node.http.post(one_node.url + "/txs", data=body, headers={"Content-Type": ctype}) as r:
        assert 400 <= r.status < 500
        assert "error" in await r.json()
    async with one_node.http.get(one_node.url + "/status") as r:
        st = await r.json()
    assert st["height"] == 0 and st["mempool"] == 0


async def test_replayed_and_forged_transactions_are_refused(one_node):
    from pienode.ledger.tx import Transaction

    node = one_node.node
    key = node.key
    from pienode.identity.certs import UserCert

    cert = UserCert("pat-00000000000000aa", "patient", "private", PrivateKey().public_key.data,
                    PrivateKey().public_key.data, "hospital-1", 1).signed_by(key)
    import time

    tx = Transaction.create(key, chain_id=node.genesis.chain_id, kind="register_user", sender="hospital-1",
                            timestamp_ms=time.time_ns() // 1_000_000, body={"cert": cert.to_dict()})
    payload = {"tx": base64.b64encode(tx.encode()).decode()}
    async with one_node.http.post(one_node.url + "/txs?wait=1", json=payload) as r:
        assert r.status == 200 and (await r.json())["receipt"]["ok"]
    async with one_node.http.post(one_node.url + "/txs", json=payload) as r:
        assert r.status == 409
    forged = Transaction(tx.chain_id, tx.kind, tx.sender, tx.timestamp_ms + 1, tx.body, tx.signature)
    async with one_node.http.post(one_node.url + "/txs",
                                  json={"tx": base64.b64encode(forged.encode()).decode()}) as r:
        assert r.status == 400 and "signature" in (await r.json())["error"]


async def test_unknown_block_and_bad_height(one_node):
    async with one_node.http.get(one_node.url + "/blocks/99") as r:
        assert r.status == 404
    async with one_node.http.get(one_node.url + "/blocks/x") as r:
        assert r.status == 400


async def test_metrics_and_openapi(one_node):
    async with one_node.http.get(one_node.url + "/metrics") as r:
        text = await r.text()
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert len(families) >= 10, families
    async with one_node.http.get(one_node.url + "/openapi.json") as r:
        spec = await r.json()
    assert "/txs" in spec["paths"] and spec["openapi"].startswith("3.")


async def test_verify_passes_then_catches_flipped_bytes(tmp_path):
    import shutil

    from pienode.storage.leveldb import LevelDBStore
    from tests.integration.conftest import RunningNode, make_cluster_dir

    home = make_cluster_dir(tmp_path / "c", 1)[0]
    rn = await RunningNode(home).start()
    import aiohttp

    async with aiohttp.ClientSession() as http:
        rn.http = http
        for role in ("patient", "physician", "researcher"):
            status, _ = await register(rn, role=role)
            assert status == 201
    await rn.stop()
    report = verify_home(home)
    assert report["ok"], report
    assert report["height"] == 3
    db = LevelDBStore(home / "data" / "ledger")
    largest = sorted(db.iterate(), key=lambda kv: -len(kv[1]))[:3]
    db.close()
    for i, (key, value) in enumerate(largest):
        copy = tmp_path / f"copy-{i}"
        shutil.copytree(home, copy)
        db = LevelDBStore(copy / "data" / "ledger")
        flipped = bytearray(value)
        flipped[len(flipped) // 2] ^= 0x01
        db.put(key, bytes(flipped), sync=True)
        db.close()
        bad = verify_home(copy)
        assert not bad["ok"] and bad["errors"], (key, bad)


async def test_receipt_of_a_committed_transaction_matches_its_block(one_node):
    """GET /txs/{id} answers from the node's recent receipts (kept encoded) and must say
    exactly what the stored block says; the commit counters count it once."""
    status, out = await register(one_node, name="Bob Example")
    assert status == 201
    tx_id = out["tx_id"]
    async with one_node.http.get(f"{one_node.url}/txs/{tx_id}") as r:
        doc = await r.json()
    assert doc["status"] == "committed" and doc["height"] == out["height"]
    async with one_node.http.get(f"{one_node.url}/blocks/{out['height']}") as r:
        block = await r.json()
    assert [doc["receipt"]] == [x for x in block["receipts"] if x["tx_id"] == tx_id]
    async with one_node.http.get(one_node.url + "/metrics") as r:
        text = await r.text()
    assert 'pie_txs_committed_total{result="ok"} 1.0' in text
    assert "pie_mempool_size 0.0" in text


def _api_count(text: str, status: int) -> float:
    for line in text.splitlines():
        if line.startswith(f'pie_api_requests_total{{status="{status}"}}'):
            return float(line.split()[1])
    return 0.0


async def test_request_counter_counts_each_status_apart(one_node):
    """The middleware keeps one counter child per status: a cached child must never be
    reused for another status (a 400 counted as a 404, or a 200 as a 400)."""
    async with one_node.http.get(one_node.url + "/metrics") as r:
        before = await r.text()
    for _ in range(3):
        async with one_node.http.get(one_node.url + "/health") as r:
            assert r.status == 200
    for _ in range(2):
        async with one_node.http.get(one_node.url + "/blocks/x") as r:
            assert r.status == 400
    async with one_node.http.get(one_node.url + "/blocks/99") as r:
        assert r.status == 404
    async with one_node.http.get(one_node.url + "/no/such/route") as r:
        assert r.status == 404 and "error" in await r.json()
    async with one_node.http.get(one_node.url + "/metrics") as r:
        after = await r.text()
    # The first /metrics answer was counted as a 200 after its body was made.
    assert _api_count(after, 200) - _api_count(before, 200) == 4
    assert _api_count(after, 400) - _api_count(before, 400) == 2
    assert _api_count(after, 404) - _api_count(before, 404) == 2


async def test_min_height_header_through_the_middleware(one_node):
    async with one_node.http.get(one_node.url + "/status", headers={"X-Pie-Min-Height": "x"}) as r:
        assert r.status == 400 and "X-Pie-Min-Height" in (await r.json())["error"]
    async with one_node.http.get(one_node.url + "/status", headers={"X-Pie-Min-Height": "0"}) as r:
        assert r.status == 200
    status, out = await register(one_node, name="Carol Example")
    assert status == 201
    async with one_node.http.get(one_node.url + "/status",
                                 headers={"X-Pie-Min-Height": str(out["height"])}) as r:
        assert r.status == 200 and (await r.json())["height"] >= out["height"]
