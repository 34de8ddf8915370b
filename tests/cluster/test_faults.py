"""Issue 3, "Checked by": a 4-node cluster of real processes under `pienode bench load`
survives kill -9 of a backup and of the primary, SIGSTOP/SIGCONT, a wiped node, the loss of
f+1 nodes, and a restart of every node at once. After each: identical chains, every
acknowledged transaction on every node, and `pienode verify` clean on every home.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import (
    Cluster, LoadHandle, check_consistent, pid_alive, pienode, verify_all, wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

#: Background load: modest, so that the suite stays within CI's time on 2 cores.
RATE = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    c.up(4)
    try:
        yield c
    finally:
        c.down()


def backups(c: Cluster) -> list[int]:
    p = c.index_of(c.primary())
    return [i for i in range(len(c.nodes)) if i != p]


def under_load(c: Cluster) -> LoadHandle:
    load = c.start_load(rate=RATE)
    wait_for(lambda: load.ids_file.exists() or c.height(0) >= 5, 60, "load to start committing")
    c.wait_height(list(range(4)), 5, 60)
    return load


def finish(c: Cluster, load: LoadHandle) -> dict:
    """Stop the load, check the chains, stop the cluster, verify every home."""
    result = load.stop()
    assert result["submitted"] > 0
    assert result["failed"] == 0, result
    assert result["committed"] == result["submitted"], result
    acked = load.acknowledged()
    assert len(acked) == result["committed"]
    height = check_consistent(c, acked)
    assert height >= 5
    c.down()
    verify_all(c)
    return result


def test_kill_backup_and_restart(cluster: Cluster) -> None:
    c = cluster
    load = under_load(c)
    victim = backups(c)[-1]
    c.kill(victim)
    others = [i for i in range(4) if i != victim]
    c.wait_progress(others, 20, 60)  # three of four keep committing
    c.start(victim)
    target = max(c.height(i) for i in others)
    c.wait_height([victim], target, 60, "the restarted backup to catch up")
    finish(c, load)


def test_kill_primary_and_restart(cluster: Cluster) -> None:
    c = cluster
    load = under_load(c)
    old = c.primary()
    victim = c.index_of(old)
    others = [i for i in range(4) if i != victim]
    before = max(c.height(i) for i in others)
    t0 = time.monotonic()
    c.kill(victim)
    wait_for(lambda: c.primary(others) != old and all(c.status(i)["primary"] != old for i in others), 30,
             "the survivors to elect a new primary")
    c.wait_height(others, before + 10, 30, "commits to resume under the new primary")
    resumed_s = time.monotonic() - t0
    c.start(victim)
    c.wait_height([victim], max(c.height(i) for i in others), 60, "the old primary to catch up")
    result = finish(c, load)
    print(f"\ncommits resumed {resumed_s:.1f} s after the primary's death; load {result}")


def test_sigstop_sigcont_primary(cluster: Cluster) -> None:
    c = cluster
    load = under_load(c)
    old = c.primary()
    victim = c.index_of(old)
    others = [i for i in range(4) if i != victim]
    c.signal(victim, signal.SIGSTOP)
    try:
        wait_for(lambda: all(c.status(i)["primary"] != old for i in others), 30,
                 "a view change past the frozen primary")
        c.wait_progress(others, 10, 30)
    finally:
        c.signal(victim, signal.SIGCONT)
    c.wait_height([victim], max(c.height(i) for i in others), 60, "the thawed node to catch up")
    c.wait_progress(list(range(4)), 10, 30)  # and take part again
    finish(c, load)


def test_wiped_node_catches_up_by_state_transfer(cluster: Cluster) -> None:
    c = cluster
    load = under_load(c)
    victim = backups(c)[-1]
    others = [i for i in range(4) if i != victim]
    c.wait_progress(others, 80, 90)  # past a checkpoint (every 64 blocks)
    c.kill(victim)
    c.wipe(victim)
    assert sorted(p.name for p in c.home(victim).iterdir()) == ["keys", "node.toml"]
    c.wait_progress(others, 10, 60)
    c.start(victim)
    c.wait_height([victim], max(c.height(i) for i in others), 90, "the wiped node to catch up")
    assert _metric(c, victim, "pie_state_transfer_blocks_total") > 0, "caught up without state transfer"
    finish(c, load)


def _metric(c: Cluster, i: int, name: str) -> float:
    with urllib.request.urlopen(c.url(i) + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")


def test_kill_f_plus_one_halts_then_resumes(cluster: Cluster) -> None:
    c = cluster
    load = under_load(c)
    b = backups(c)
    victims = b[-2:]
    others = [i for i in range(4) if i not in victims]
    c.kill(*victims)
    # Two of four left: no quorum. Once in-flight blocks settle, the height must not move.
    settled = wait_for(lambda: _stable_heights(c, others, 2.0), 30, "the survivors' height to settle")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert {i: c.height(i) for i in others} == settled, "committed without a quorum"
        time.sleep(0.2)
    assert len({c.status(i)["last_block_hash"] for i in others}) == 1
    c.start(victims[0])
    c.wait_height(others + victims[:1], max(settled.values()) + 5, 90, "commits to resume with three nodes")
    c.start(victims[1])
    c.wait_height([victims[1]], max(c.height(i) for i in others), 90, "the last node to catch up")
    finish(c, load)


def _stable_heights(c: Cluster, idx: list[int], window_s: float) -> dict[int, int] | None:
    first = {i: c.height(i) for i in idx}
    end = time.monotonic() + window_s
    while time.monotonic() < end:
        time.sleep(0.2)
        if {i: c.height(i) for i in idx} != first:
            return None
    return first


def test_restart_every_node_at_once(cluster: Cluster) -> None:
    c = cluster
    load = under_load(c)
    c.wait_progress(list(range(4)), 20, 60)
    for i in range(4):
        c.terminate(i)
    pids = [n["pid"] for n in c.nodes]
    wait_for(lambda: not any(pid_alive(p) for p in pids), 30, "every node to stop")
    before = _last_height_in_logs(c)
    for i in range(4):
        c.start(i)
    c.wait_height(list(range(4)), before + 10, 90, "commits to resume after a full restart")
    finish(c, load)


def _last_height_in_logs(c: Cluster) -> int:
    """The highest height any node had committed when stopped (from its ledger, offline)."""
    heights = []
    for i in range(4):
        r = pienode("verify", "--home", str(c.home(i)), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        heights.append(json.loads(r.stdout)["height"])
    return max(heights)
