"""An in-process node (or several) on loopback, with its API served on a free port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from pienode.cli.cluster import free_ports
from pienode.identity.consortium import HostSpec, create_consortium
from pienode.runtime.config import load_config


class RunningNode:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.node = None
        self.runner = None

    async def start(self) -> "RunningNode":
        from pienode.api.app import serve
        from pienode.runtime.node import Node

        cfg = load_config(self.home, env={})
        self.node = Node(cfg)
        await self.node.start()
        self.runner = await serve(self.node)
        self.url = f"http://127.0.0.1:{cfg.api.port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.node is not None:
            await self.node.stop()


def make_cluster_dir(tmp: Path, n: int) -> list[Path]:
    ports = free_ports(2 * n)
    hosts = [HostSpec(f"hospital-{i + 1}", f"Hospital {i + 1}", "127.0.0.1", ports[2 * i], ports[2 * i + 1])
             for i in range(n)]
    create_consortium(tmp, hosts)
    return [tmp / h.node_id for h in hosts]


@pytest.fixture
async def one_node(tmp_path):
    home = make_cluster_dir(tmp_path, 1)[0]
    rn = await RunningNode(home).start()
    async with aiohttp.ClientSession() as http:
        rn.http = http
        yield rn
    await rn.stop()


async def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
