"""``pienode start``: run one node in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from pienode.runtime.config import load_config
from pienode.runtime.logs import setup_logging

log = logging.getLogger("pienode.main")


async def run_node(home: Path) -> int:
    from pienode.api.app import serve
    from pienode.runtime.node import Node

    cfg = load_config(home)
    setup_logging(cfg.node_id, level=cfg.log.level, json_lines=cfg.log.json)
    node = Node(cfg)
    await node.start()
    runner = await serve(node)
    log.info("API on http://%s:%d, peers on %s:%d", cfg.api.host, cfg.api.port, cfg.peer.host, cfg.peer.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(node.wait_closed())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if waiter.done() and waiter.exception() is not None:
        code = 3
    log.info("shutting down")
    stopper.cancel()
    await runner.cleanup()
    await node.stop()
    return code
