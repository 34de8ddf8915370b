"""Real-process cluster harness: nodes as OS processes, faults by signal, checks over HTTP.

Owns: starting and stopping a local cluster through the ``pienode`` CLI, killing and
restarting single nodes (keeping ``cluster.json`` pointing at the live pids so that
``cluster down`` always stops them), background load through ``pienode bench load``, and
the end-of-scenario checks (same head everywhere, same block hashes at sampled heights,
every acknowledged transaction on every node, ``pienode verify`` clean on every home).
Never sleeps in place of a condition: every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pienode(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pienode.cli.operator", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            out = cond()
            if out:
                return out
        except Exception as exc:  # a node that is down answers nothing; keep polling
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def get_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


@dataclass
class LoadHandle:
    proc: subprocess.Popen[str]
    ids_file: Path
    result: dict[str, Any] | None = None

    def stop(self, timeout: float = 150) -> dict[str, Any]:
        """Stop submitting, let in-flight transactions finish, return the bench's JSON."""
        if self.result is not None:
            return self.result
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=timeout)
        assert out.strip(), f"bench load printed nothing (exit {self.proc.returncode}): {err[-2000:]}"
        self.result = json.loads(out)
        return self.result

    def acknowledged(self) -> list[str]:
        return [line for line in self.ids_file.read_text().split() if line]


@dataclass
class Cluster:
    directory: Path
    nodes: list[dict[str, Any]] = field(default_factory=list)
    spawned: set[int] = field(default_factory=set)
    loads: list[LoadHandle] = field(default_factory=list)

    # -- lifecycle ---------------------------------------------------------------------

    def up(self, n: int = 4) -> None:
        r = pienode("cluster", "up", "--dir", str(self.directory), "--nodes", str(n), "--detach", "--json")
        assert r.returncode == 0, f"cluster up failed: {r.stderr}"
        self.nodes = json.loads(r.stdout)["nodes"]
        self.spawned.update(x["pid"] for x in self.nodes)

    def down(self) -> None:
        for load in self.loads:
            try:
                os.killpg(load.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if load.proc.poll() is None:
                load.proc.wait()
        if (self.directory / "cluster.json").exists():
            pienode("cluster", "down", "--dir", str(self.directory), timeout=60)
        for pid in self.spawned:  # anything cluster.json no longer named
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for pid in self.spawned:
            wait_for(lambda: not pid_alive(pid), 10, f"pid {pid} to exit")

    def _save(self) -> None:
        tmp = self.directory / "cluster.json.tmp"
        tmp.write_text(json.dumps({"nodes": self.nodes}, indent=2) + "\n")
        os.replace(tmp, self.directory / "cluster.json")

    def url(self, i: int) -> str:
        return self.nodes[i]["api"]

    def home(self, i: int) -> Path:
        return Path(self.nodes[i]["home"])

    def index_of(self, node_id: str) -> int:
        return next(i for i, n in enumerate(self.nodes) if n["id"] == node_id)

    def signal(self, i: int, sig: int) -> None:
        os.kill(self.nodes[i]["pid"], sig)

    def kill(self, *idx: int) -> None:
        pids = [self.nodes[i]["pid"] for i in idx]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(p) for p in pids), 10, f"nodes {idx} to die")

    def terminate(self, i: int) -> None:
        pid = self.nodes[i]["pid"]
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)

    def start(self, i: int) -> None:
        home = self.home(i)
        with open(home / "node.log", "ab") as log:
            proc = subprocess.Popen([PY, "-m", "pienode.cli.operator", "start", "--home", str(home)],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=_env())
        self.nodes[i]["pid"] = proc.pid
        self.spawned.add(proc.pid)
        self._save()
        wait_for(lambda: get_json(self.url(i) + "/health").get("ok"), 60, f"{self.nodes[i]['id']} healthy")

    def wipe(self, i: int) -> None:
        """Everything but ``node.toml`` and ``keys/`` goes (the node must be stopped)."""
        home = self.home(i)
        for p in home.iterdir():
            if p.name in ("node.toml", "keys"):
                continue
            if p.name == "node.log":
                p.rename(home.parent / f"{home.name}.wiped.log")  # keep it for post-mortems
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    # -- observing ---------------------------------------------------------------------

    def status(self, i: int) -> dict[str, Any]:
        return get_json(self.url(i) + "/status")

    def statuses(self, idx: list[int] | None = None) -> dict[int, dict[str, Any]]:
        out = {}
        for i in idx if idx is not None else range(len(self.nodes)):
            try:
                out[i] = self.status(i)
            except (OSError, urllib.error.URLError, ValueError):
                pass
        return out

    def height(self, i: int) -> int:
        return int(self.status(i)["height"])

    def primary(self, idx: list[int] | None = None) -> str:
        """The primary that a majority of the answering nodes report."""
        votes: dict[str, int] = {}
        for st in self.statuses(idx).values():
            votes[st["primary"]] = votes.get(st["primary"], 0) + 1
        return max(votes, key=lambda p: votes[p])

    def wait_height(self, idx: list[int], at_least: int, timeout: float, what: str = "") -> None:
        wait_for(lambda: all(self.height(i) >= at_least for i in idx), timeout,
                 what or f"nodes {idx} to reach height {at_least}")

    def wait_progress(self, idx: list[int], blocks: int, timeout: float) -> int:
        start = max(st["height"] for st in self.statuses(idx).values())
        self.wait_height(idx, start + blocks, timeout, f"{blocks} new blocks on nodes {idx}")
        return start + blocks

    def wait_converged(self, timeout: float = 60) -> tuple[int, str]:
        """All nodes report the same height and head hash (load must be stopped)."""
        def same() -> tuple[int, str] | None:
            sts = self.statuses()
            if len(sts) != len(self.nodes):
                return None
            heads = {(s["height"], s["last_block_hash"]) for s in sts.values()}
            return heads.pop() if len(heads) == 1 else None
        try:
            return wait_for(same, timeout, "every node to report the same height and hash", interval=0.2)
        except AssertionError as exc:
            heads = {self.nodes[i]["id"]: (s["height"], s["last_block_hash"][:12], s["view"], s["mempool"])
                     for i, s in self.statuses().items()}
            raise AssertionError(f"{exc}: (height, hash, view, mempool) = {heads}") from None

    # -- load ---------------------------------------------------------------------------

    def start_load(self, txs: int = 3000, concurrency: int = 8, rate: float = 30.0) -> LoadHandle:
        ids = self.directory / f"acked-{len(self.loads)}.txt"
        proc = subprocess.Popen(
            [PY, "-m", "pienode.cli.operator", "bench", "load", "--dir", str(self.directory), "--txs", str(txs),
             "--concurrency", str(concurrency), "--rate", str(rate), "--ids-out", str(ids), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own group: teardown also stops its signing workers
        handle = LoadHandle(proc, ids)
        self.loads.append(handle)
        return handle


# -- end-of-scenario checks --------------------------------------------------------------


async def _tx_everywhere(urls: list[str], ids: list[str]) -> list[str]:
    missing: list[str] = []
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def one(url: str, tx: str) -> None:
            async with sem:
                async with s.get(f"{url}/txs/{tx}") as r:
                    doc = await r.json()
                    if r.status != 200 or doc.get("status") != "committed":
                        missing.append(f"{url} {tx} {r.status}")
        await asyncio.gather(*(one(u, t) for u in urls for t in ids))
    return missing


def check_consistent(c: Cluster, acked: list[str], samples: int = 12) -> int:
    """Identical chains, nothing acknowledged lost. Returns the common height."""
    height, head = c.wait_converged()
    picks = sorted({1, height} | {max(1, height * k // samples) for k in range(1, samples)})
    for h in picks:
        hashes = {get_json(f"{c.url(i)}/blocks/{h}")["hash"] for i in range(len(c.nodes))}
        assert len(hashes) == 1, f"nodes disagree on block {h}: {hashes}"
    missing = asyncio.run(_tx_everywhere([c.url(i) for i in range(len(c.nodes))], acked))
    assert not missing, f"{len(missing)} acknowledged transaction lookups failed, e.g. {missing[:5]}"
    return height


def verify_all(c: Cluster) -> None:
    procs = [subprocess.Popen([PY, "-m", "pienode.cli.operator", "verify", "--home", str(c.home(i)), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for i in range(len(c.nodes))]
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"verify {c.home(i)} failed: {out[-2000:]} {err[-2000:]}"
        assert json.loads(out)["ok"] is True
