"""The paper bench's untimed pause between an upload and the timed download."""

from __future__ import annotations

from pienode.bench import paper


def test_settle_is_at_least_the_floor_and_grows_with_size() -> None:
    assert paper.settle_seconds(400) >= paper.SETTLE_SECONDS
    assert paper.settle_seconds(1_000_000) < 0.2  # a 1 MB run stays quick
    assert paper.settle_seconds(1_000_000_000) > paper.settle_seconds(10_000_000) + 1.0


def test_the_pause_is_outside_the_timed_download() -> None:
    import inspect

    src = inspect.getsource(paper.run_paper)
    pause = src.index("settle_seconds(size)")
    assert src.index("emr.upload(doc") < pause < src.index("got = await emr.fetch")
    # the download's clock starts after the pause
    assert pause < src.index("t = time.perf_counter()", pause) < src.index("got = await emr.fetch")
