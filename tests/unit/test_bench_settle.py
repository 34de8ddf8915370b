"""The paper bench's untimed wait between an upload and the timed download: every hospital
has committed the upload's block and holds the whole file."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from pienode.bench import paper

CID = "bafkreiexample"


async def fake_node(height: list[int], complete: list[bool]) -> tuple[web.AppRunner, str]:
    """A node whose height and copy of CID the test moves along; each poll counts."""
    async def status(_: web.Request) -> web.Response:
        return web.json_response({"height": height[0]})

    async def stat(request: web.Request) -> web.Response:
        assert request.match_info["cid"] == CID
        if complete[0] is None:
            return web.json_response({"error": "no such file"}, status=404)
        return web.json_response({"cid": CID, "complete": complete[0]})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/files/{cid}/stat", stat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_settles_only_when_every_node_has_the_block_and_the_whole_file() -> None:
    a_h, a_c, b_h, b_c = [7], [True], [6], [None]  # b: behind, and no copy yet
    ra, ua = await fake_node(a_h, a_c)
    rb, ub = await fake_node(b_h, b_c)
    try:
        async with aiohttp.ClientSession() as http:
            assert not await paper.settle(http, [ua, ub], CID, 7, timeout_s=0.1)
            b_h[0] = 7  # executed the block, still no copy
            assert not await paper.settle(http, [ua, ub], CID, 7, timeout_s=0.1)
            b_c[0] = False  # a partial copy is not enough
            assert not await paper.settle(http, [ua, ub], CID, 7, timeout_s=0.1)
            b_c[0] = True
            assert await paper.settle(http, [ua, ub], CID, 7, timeout_s=5)
    finally:
        await ra.cleanup()
        await rb.cleanup()


async def test_an_unreachable_node_does_not_settle() -> None:
    async with aiohttp.ClientSession() as http:
        assert not await paper.settle(http, ["http://127.0.0.1:9"], CID, 1, timeout_s=0.1)


def test_bench_paper_sizes_option_takes_only_the_papers_sizes() -> None:
    import argparse

    from pienode.cli.operator import _sizes

    assert _sizes("1000000") == (1_000_000,)
    assert _sizes("400, 1000000") == (400, 1_000_000)
    for bad in ("", "1000", "1e6", "400,,x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _sizes(bad)
