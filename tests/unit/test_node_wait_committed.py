"""``Node.wait_committed``: the caller's future resolves on commit, on its own timer, or is
dropped when the caller goes away; no waiter outlives its caller."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from pienode.ledger.block import Receipt
from pienode.runtime.mempool import Mempool
from pienode.runtime.node import Node

TX = b"\x01" * 32


def stub() -> SimpleNamespace:
    return SimpleNamespace(ledger=SimpleNamespace(tx_height=lambda tx_id: None), mempool=Mempool())


async def test_a_commit_wakes_the_waiter_with_its_receipt():
    node = stub()
    receipt = Receipt(TX, True, "ok", "")
    waiting = asyncio.ensure_future(Node.wait_committed(node, TX, 5.0))
    await asyncio.sleep(0)
    node.mempool.committed(TX, 7, receipt)
    assert await waiting == (7, receipt)
    assert not node.mempool._waiters


async def test_the_timer_gives_none_and_forgets_the_waiter():
    node = stub()
    assert await Node.wait_committed(node, TX, 0.01) is None
    assert not node.mempool._waiters
    node.mempool.committed(TX, 7, Receipt(TX, True, "ok", ""))  # a late commit finds nobody


async def test_a_cancelled_caller_leaves_no_waiter():
    node = stub()
    waiting = asyncio.ensure_future(Node.wait_committed(node, TX, 5.0))
    await asyncio.sleep(0)
    assert node.mempool._waiters
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not node.mempool._waiters
