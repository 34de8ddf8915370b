"""Issue 4, push replication on real processes: the hospital receiving an upload is killed
with SIGKILL while it streams blocks to the acknowledging hospital. The client gets no
acknowledgement, and neither hospital shows any part of the file, also after restarts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.harness import Cluster, get_json, wait_for

MIB = 1 << 20


def pack_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "data" / "files" / "packs").glob("*.pack"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("push") / "cluster")
    c.up(4)
    try:
        yield c
    finally:
        c.down()


@pytest.mark.cluster
async def test_kill_9_of_the_receiving_node_mid_upload(cluster: Cluster) -> None:
    c = cluster
    origin = 1  # hospital-2 pushes to hospital-1, the first other hospital in id order
    replica = c.index_of("hospital-1")
    sent = 0
    # The push goes to the first *linked* other hospital: wait until that is hospital-1.
    wait_for(lambda: c.status(origin)["peers_connected"] == 3, 60, "hospital-2 linked to all")

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            piece = os.urandom(MIB)
            sent += len(piece)
            yield piece

    outcome: list[object] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        import asyncio

        async def upload() -> None:
            try:
                async with s.post(c.url(origin) + "/files", data=endless()) as r:
                    outcome.append(r.status)
            except (aiohttp.ClientError, OSError) as exc:
                outcome.append(exc)

        task = asyncio.ensure_future(upload())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        # The push is flowing: the replica has appended blocks of the unfinished upload.
        while pack_bytes(c.home(replica)) < 48 * MIB:
            assert loop.time() < deadline and not task.done(), (outcome, sent)
            await asyncio.sleep(0.05)
        c.kill(origin)
        await asyncio.wait_for(task, 60)
    assert outcome and not (isinstance(outcome[0], int) and outcome[0] == 200), outcome  # no ack

    # Nothing of it is visible at the replica, whose session is still open.
    assert get_json(c.url(replica) + "/files")["files"] == []
    # A replica killed too comes back with the unfinished bytes cut away.
    c.kill(replica)
    c.start(replica)
    assert get_json(c.url(replica) + "/files")["files"] == []
    assert pack_bytes(c.home(replica)) == 0
    c.start(origin)
    assert get_json(c.url(origin) + "/files")["files"] == []
    assert pack_bytes(c.home(origin)) == 0
    # And the cluster still takes uploads, acknowledged once two hospitals hold them.
    wait_for(lambda: c.status(origin)["peers_connected"] == 3, 60, "the restarted origin linked to all")
    data = os.urandom(3 * MIB + 7)
    async with aiohttp.ClientSession() as s:
        async with s.post(c.url(origin) + "/files", data=data) as r:
            assert r.status == 200, await r.text()
            cid = (await r.json())["cid"]
    holders = [i for i in range(4) if any(f["cid"] == cid for f in get_json(c.url(i) + "/files")["files"])]
    assert len(holders) >= 2, holders
    wait_for(lambda: all(
        any(f["cid"] == cid for f in get_json(c.url(i) + "/files")["files"]) for i in range(4)
    ), 60, "background replication to every hospital")
