"""The pieces of `pienode bench load` that need no cluster: signed uploads, percentiles,
dead-node skipping, rate limiting."""

from __future__ import annotations

import base64
import time

from pienode.bench.load import NodeSet, RateLimiter, percentile
from pienode.bench.txgen import UploadSpec, fake_cid, sign_uploads
from pienode.crypto.keys import PrivateKey
from pienode.ledger.kinds import CID_RE, KINDS
from pienode.ledger.tx import TX_DOMAIN, Transaction


def test_signed_uploads_are_distinct_valid_and_signed_by_the_physician() -> None:
    key = PrivateKey.generate()
    spec = UploadSpec(key.to_bytes().hex(), "phy-0123456789abcdef", "pat-0123456789abcdef", "pie-test", 1, "t1")
    txs = sign_uploads(spec, 50)
    assert len({t.tx_id for t in txs}) == 50
    for t in txs[:10]:
        tx = Transaction.decode(base64.b64decode(t.b64), max_bytes=64 * 1024)
        assert tx.tx_id.hex() == t.tx_id
        assert tx.kind == "upload_record" and tx.sender == "phy-0123456789abcdef"
        KINDS["upload_record"].check_body(tx.body)  # raises on a malformed body
        assert key.public_key.verify(TX_DOMAIN, tx.unsigned_bytes(), tx.signature)
    bodies = [Transaction.decode(base64.b64decode(t.b64), max_bytes=64 * 1024).body for t in txs]
    assert len({b["record_id"] for b in bodies}) == 50
    assert len({b["cid"] for b in bodies}) == 50


def test_worker_pool_signs_the_same_set_in_order() -> None:
    spec = UploadSpec(PrivateKey.generate().to_bytes().hex(), "phy-0123456789abcdef", "pat-0123456789abcdef",
                      "pie-test", 1, "t2")
    pooled = sign_uploads(spec, 2100, workers=2)
    assert [t.tx_id for t in pooled[:5]] == [t.tx_id for t in sign_uploads(spec, 5)]
    assert len({t.tx_id for t in pooled}) == 2100


def test_fake_cid_is_a_base32_cidv1() -> None:
    assert CID_RE.fullmatch(fake_cid(b"x"))
    assert fake_cid(b"x") != fake_cid(b"y")


def test_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) in (50.0, 51.0)
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) == 0.0


def test_nodeset_skips_a_failed_node_then_retries_it() -> None:
    nodes = NodeSet(["a", "b", "c"])
    assert nodes.pick(0) == "a"
    nodes.failed("a")
    assert nodes.pick(0) == "b"
    for u in ("b", "c"):
        nodes.failed(u)
    assert nodes.pick(0) is None


async def test_rate_limiter_spaces_requests() -> None:
    lim = RateLimiter(200.0)
    t0 = time.monotonic()
    for _ in range(21):
        await lim.take(1)
    assert time.monotonic() - t0 >= 0.09  # 20 intervals of 5 ms
