"""Issue 5 on a real 4-hospital cluster: a benign contract answers alike on every hospital;
hostile contracts are refused at deploy or fail cleanly (one line, bounded time), the
nodes stay healthy, and deterministic failures are the same everywhere."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, get_json, pienode

BENIGN = '''
EXPORTS = ["tally", "count"]


def tally(ctx, word):
    n = ctx.get("w/" + word, 0) + 1
    ctx.put("w/" + word, n)
    return n


def count(ctx, word, times=3):
    out = []
    for i in range(times):
        out.append(word * (i + 1))
    return {"out": out, "height_seen": ctx.height > 0, "sum": sum(len(x) for x in out)}
'''

REFUSED_AT_DEPLOY = {
    "subclasses": "def f(ctx):\n    return ().__class__.__bases__[0].__subclasses__()\n",
    "import_os": "import os\n\ndef f(ctx):\n    return os.listdir('/')\n",
    "fullwidth": "def f(ctx):\n    return ().__\uff43\uff4c\uff41\uff53\uff53__\n",
    "format_walk": "def f(ctx):\n    return '{0.__class__}'.format(1)\n",
    "eval": "def f(ctx):\n    return eval('1+1')\n",
    "getattr": "def f(ctx):\n    return getattr(ctx, 'x')\n",
    "class_def": "class A:\n    pass\n\ndef f(ctx):\n    return 1\n",
    "global": "X = 1\n\ndef f(ctx):\n    global X\n    X = 2\n",
}

FAIL_AT_CALL = {
    "spin": "def f(ctx):\n    n = 0\n    while True:\n        n += 1\n",
    "recurse": "def f(ctx):\n    return f(ctx)\n",
    "bigpow": "def f(ctx):\n    return 10 ** (10 ** 8)\n",
    "biglist": "def f(ctx):\n    return [0] * (10 ** 9)\n",
    "bomb_str": "def f(ctx):\n    a = [1]\n    for i in range(60):\n        a = [a, a]\n    return str(a)\n",
    "bomb_eq": "def f(ctx):\n    a = [1]\n    b = [1]\n    for i in range(60):\n        a = [a, a]\n        b = [b, b]\n    return a == b\n",
    "escape_ns": "def f(ctx):\n    ctx.put('../../u/pat-1', 1)\n    return 1\n",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("contracts") / "cluster")
    c.up(4)
    try:
        yield c
    finally:
        c.down()


def deploy(c: Cluster, name: str, source: str, tmp: Path):
    path = tmp / f"{name}.py"
    path.write_text(source)
    return pienode("contract", "deploy", "--home", str(c.home(0)), "--name", name, "--file", str(path), "--json",
                   timeout=60)


def call(c: Cluster, i: int, name: str, fn: str, args: dict):
    return pienode("contract", "call", "--node", c.url(i), "--name", name, "--fn", fn, "--args", json.dumps(args),
                   "--json", timeout=60)


@pytest.mark.cluster
def test_benign_contract_answers_alike_everywhere(cluster, tmp_path):
    r = deploy(cluster, "wordcount", BENIGN, tmp_path)
    assert r.returncode == 0, r.stderr
    height = json.loads(r.stdout)["height"]
    cluster.wait_height(list(range(4)), height, 60)
    answers = []
    for i in range(4):
        out = call(cluster, i, "wordcount", "count", {"word": "ab", "times": 4})
        assert out.returncode == 0, out.stderr
        answers.append(json.loads(out.stdout))
    assert all(a == answers[0] for a in answers)
    assert answers[0]["value"]["sum"] == 2 + 4 + 6 + 8


@pytest.mark.cluster
@pytest.mark.parametrize("name", sorted(REFUSED_AT_DEPLOY))
def test_hostile_source_is_refused_at_deploy_and_changes_nothing(cluster, tmp_path, name):
    before = get_json(cluster.url(0) + "/status")["height"]
    r = deploy(cluster, "bad_" + name, REFUSED_AT_DEPLOY[name], tmp_path)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert "line" in err
    assert get_json(cluster.url(0) + "/status")["height"] == before


@pytest.mark.cluster
@pytest.mark.parametrize("name", sorted(FAIL_AT_CALL))
def test_hostile_call_fails_cleanly_alike_and_nodes_stay_healthy(cluster, tmp_path, name):
    r = deploy(cluster, "atk_" + name, FAIL_AT_CALL[name], tmp_path)
    assert r.returncode == 0, r.stderr
    cluster.wait_height(list(range(4)), json.loads(r.stdout)["height"], 60)
    errors = []
    for i in range(4):
        t = time.monotonic()
        out = call(cluster, i, "atk_" + name, "f", {})
        assert time.monotonic() - t < 30
        assert out.returncode != 0
        err = out.stderr.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
        errors.append(err.split(":", 2)[1].strip())
        assert get_json(cluster.url(i) + "/health") == {"ok": True}
    assert len(set(errors)) == 1, errors  # the same deterministic failure class on every hospital
