"""Local clusters: N hospital nodes as N OS processes on this machine.

``cluster up`` creates a consortium in DIR (or restarts the one already there, keeping its
data), starts one ``pienode start --home`` process per node with its log in
``HOME/node.log``, and writes ``DIR/cluster.json``. ``down`` stops them (SIGTERM, then
SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomllib

from pienode.cli.client import NodeClient
from pienode.errors import PieError
from pienode.identity.consortium import HostSpec, create_consortium, hospital_names, load_template

CLUSTER_FILE = "cluster.json"


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def homes_of(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if (p / "node.toml").exists()),
                  key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else 0)


def api_url_of(home: Path) -> str:
    cfg = tomllib.loads((home / "node.toml").read_text())
    api = cfg.get("api", {})
    host = api.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{api.get('port', 8700)}"


def start_process(home: Path) -> int:
    log = open(home / "node.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pienode.cli.operator", "start", "--home", str(home)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return proc.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours counts as dead
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done != 0:
            return False
    except ChildProcessError:
        pass
    try:  # a zombie nobody reaped (a container's init may not) is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def read_cluster(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / CLUSTER_FILE).read_text())
    except FileNotFoundError:
        raise PieError(f"no cluster in {directory} (run `pienode cluster up --dir {directory}`)") from None


def write_cluster(directory: Path, nodes: list[dict[str, Any]]) -> None:
    tmp = directory / (CLUSTER_FILE + ".tmp")
    tmp.write_text(json.dumps({"nodes": nodes}, indent=2) + "\n")
    os.replace(tmp, directory / CLUSTER_FILE)


def create(directory: Path, n: int, base_port: int | None) -> None:
    if n < 1:
        raise PieError("a cluster needs at least one node")
    ports = [base_port + i for i in range(2 * n)] if base_port else free_ports(2 * n)
    names = hospital_names(n, load_template())
    hosts = [HostSpec(nid, name, "127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i, (nid, name) in enumerate(names)]
    directory.mkdir(parents=True, exist_ok=True)
    create_consortium(directory, hosts)


async def wait_healthy(urls: list[str], timeout_s: float, pids: list[int]) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(urls)
    async with NodeClient("http://unused", timeout_s=2) as c:
        while pending:
            for url, pid in zip(urls, pids):
                if url in pending and not pid_alive(pid):
                    raise PieError(f"node at {url} exited during start-up; see its node.log")
            for url, pid in zip(urls, pids):
                if url not in pending:
                    continue
                try:
                    async with c.session.get(url + "/status") as r:
                        if r.status == 200:
                            answered = (await r.json()).get("pid")
                            if answered != pid:
                                raise PieError(f"another process (pid {answered}) already serves {url}")
                            pending.discard(url)
                except PieError:
                    raise
                except Exception:
                    pass
            if not pending:
                return
            if time.monotonic() > deadline:
                raise PieError(f"nodes not healthy after {timeout_s:.0f} s: {', '.join(sorted(pending))}")
            await asyncio.sleep(0.1)


def up(directory: Path, n: int, base_port: int | None, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    directory = directory.resolve()
    if not (directory / "genesis.json").exists():
        create(directory, n, base_port)
    else:
        try:
            for node in read_cluster(directory)["nodes"]:
                if node.get("pid") and pid_alive(node["pid"]):
                    raise PieError(f"cluster in {directory} is already running ({node['id']} pid {node['pid']})")
        except PieError as exc:
            if "already running" in exc.message:
                raise
    nodes = []
    for home in homes_of(directory):
        pid = start_process(home)
        nodes.append({"id": home.name, "api": api_url_of(home), "home": str(home), "pid": pid})
    write_cluster(directory, nodes)
    asyncio.run(wait_healthy([x["api"] for x in nodes], timeout_s, [x["pid"] for x in nodes]))
    return nodes


def down(directory: Path, grace_s: float = 10.0) -> list[str]:
    nodes = read_cluster(directory.resolve())["nodes"]
    stopped = []
    for node in nodes:
        pid = node.get("pid")
        if pid and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            stopped.append(node["id"])
    deadline = time.monotonic() + grace_s
    for node in nodes:
        pid = node.get("pid")
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    return stopped


async def status(directory: Path) -> list[dict[str, Any]]:
    nodes = read_cluster(directory.resolve())["nodes"]
    out = []
    async with NodeClient("http://unused", timeout_s=3) as c:
        for node in nodes:
            row: dict[str, Any] = {"id": node["id"], "api": node["api"], "pid": node.get("pid"),
                                   "alive": bool(node.get("pid")) and pid_alive(node["pid"])}
            try:
                async with c.session.get(node["api"] + "/status") as r:
                    row.update(await r.json())
                    row["healthy"] = r.status == 200
            except Exception:
                row["healthy"] = False
            out.append(row)
    return out
