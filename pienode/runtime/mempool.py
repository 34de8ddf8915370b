"""Admitted, not yet committed transactions, and the callers waiting for their commits.

Bounded: past ``capacity`` the node refuses new transactions (503) instead of growing.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from pienode.errors import PieError
from pienode.ledger.block import Receipt


class MempoolFull(PieError):
    status = 503


class Mempool:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._txs: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        #: Futures resolved with (height, receipt) on commit, or None by the waiter's timer.
        self._waiters: dict[bytes, list[asyncio.Future[tuple[int, Receipt] | None]]] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._txs

    def add(self, tx_id: bytes, data: bytes) -> bool:
        """Add; False if already present. Raises MempoolFull past capacity."""
        if tx_id in self._txs:
            return False
        if len(self._txs) >= self.capacity:
            raise MempoolFull("the node's mempool is full; retry later")
        self._txs[tx_id] = (data, time.monotonic())
        return True

    def pending(self) -> list[bytes]:
        return [d for d, _ in self._txs.values()]

    def wait(self, tx_id: bytes) -> "asyncio.Future[tuple[int, Receipt] | None]":
        fut: asyncio.Future[tuple[int, Receipt] | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_id, []).append(fut)
        return fut

    def forget_waiter(self, tx_id: bytes, fut: "asyncio.Future[tuple[int, Receipt] | None]") -> None:
        lst = self._waiters.get(tx_id)
        if lst and fut in lst:
            lst.remove(fut)
            if not lst:
                del self._waiters[tx_id]

    def committed(self, tx_id: bytes, height: int, receipt: Receipt) -> float | None:
        """Drop a committed transaction, wake its waiters; returns its age in seconds."""
        entry = self._txs.pop(tx_id, None)
        for fut in self._waiters.pop(tx_id, []):
            if not fut.done():
                fut.set_result((height, receipt))
        return None if entry is None else time.monotonic() - entry[1]
