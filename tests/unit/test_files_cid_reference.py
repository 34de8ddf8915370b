"""Our CIDs against two independent IPFS implementations, by exact string equality.

References: the PyPI package ``aleph-cid`` (a Rust kubo-compatible hasher) and the npm
package ``ipfs-unixfs-importer`` (the importer of js-ipfs/Helia) driven by tests/js/cid.mjs,
both with ``ipfs add --cid-version=1`` parameters. CI installs the npm one with
``npm install --prefix tests/js``.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pienode.files.unixfs import CHUNK_SIZE, DagBuilder, Rechunker, file_cid

aleph_cid = pytest.importorskip("aleph_cid", reason="issue 4: install the test extra (aleph-cid)")

JS_DIR = Path(__file__).resolve().parents[1] / "js"
HAS_JS = (JS_DIR / "node_modules" / "ipfs-unixfs-importer").is_dir() and shutil.which("node")
needs_js = pytest.mark.skipif(  # issue 4
    not HAS_JS, reason="issue 4: run `npm install --prefix tests/js` for the JS reference"
)

L = 174 * CHUNK_SIZE
SIZES = {
    "empty": 0,
    "one_byte": 1,
    "chunk_minus_1": CHUNK_SIZE - 1,
    "chunk": CHUNK_SIZE,
    "chunk_plus_1": CHUNK_SIZE + 1,
    "two_chunks": 2 * CHUNK_SIZE,
    "links_174": L,
    "links_174_plus_1": L + 1,
    "random_64mib": 64 * 1024 * 1024 + 12345,
}


def _read_pieces(path: Path, piece: int = 1 << 20):
    with path.open("rb") as f:
        while True:
            b = f.read(piece)
            if not b:
                return
            yield b


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cidref")
    rng = random.Random(4)
    out = {}
    for name, size in SIZES.items():
        p = root / name
        with p.open("wb") as f:
            left = size
            while left:
                n = min(left, 8 << 20)
                f.write(rng.randbytes(n))
                left -= n
        out[name] = p
    return out


def _ours(path: Path) -> str:
    cid, size = file_cid(_read_pieces(path))
    assert size == path.stat().st_size
    return str(cid)


def _aleph(path: Path) -> str:
    h = aleph_cid.CidHasher.for_ipfs_v1_raw_leaves()
    for piece in _read_pieces(path):
        h.update(piece)
    return h.finalize()


def _js(paths: list[Path], max_links: int = 174) -> list[str]:
    out = subprocess.run(
        ["node", str(JS_DIR / "cid.mjs"), "--max-links", str(max_links), *map(str, paths)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out.stdout.split()


@pytest.mark.parametrize("name", list(SIZES))
def test_matches_aleph_cid(files: dict[str, Path], name: str) -> None:
    assert _ours(files[name]) == _aleph(files[name])


@needs_js
def test_matches_js_importer(files: dict[str, Path]) -> None:
    names = list(SIZES)
    ours = [_ours(files[n]) for n in names]
    theirs = _js([files[n] for n in names])
    assert dict(zip(names, ours)) == dict(zip(names, theirs))
    assert ours[0] == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert ours[3].startswith("bafkrei") and ours[4].startswith("bafybei")


@needs_js
def test_deep_dag_shape_matches_js_with_narrow_fanout(tmp_path: Path) -> None:
    """With 3 links per node, 2..28 leaves reach depths 1..4, exercising every closing path
    of the builder (full subtrees, one-leaf chains at full height) with small files."""
    rng = random.Random(7)
    paths = []
    ours = []
    for leaves in (2, 3, 4, 9, 10, 12, 27, 28):
        size = (leaves - 1) * CHUNK_SIZE + 1 + rng.randrange(CHUNK_SIZE - 1)
        data = rng.randbytes(size)
        p = tmp_path / f"l{leaves}"
        p.write_bytes(data)
        paths.append(p)
        chunker = Rechunker()
        b = DagBuilder(max_links=3)
        for c in chunker.feed(data):
            b.add_leaf(c)
        tail = chunker.flush()
        if tail:
            b.add_leaf(tail)
        ours.append(str(b.finish()[0]))
    assert ours == _js(paths, max_links=3)
