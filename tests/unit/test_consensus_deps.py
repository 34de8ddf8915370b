"""The dependency rule: the consensus core does no I/O and knows no other subsystem."""

from __future__ import annotations

import ast
from pathlib import Path

import pienode.consensus

FORBIDDEN = ("asyncio", "socket", "time", "plyvel", "aiohttp", "threading", "random",
             "pienode.net", "pienode.ledger", "pienode.api", "pienode.storage", "pienode.runtime")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_consensus_imports_no_io_and_no_other_subsystem() -> None:
    root = Path(pienode.consensus.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for name in _imports(path):
            for bad in FORBIDDEN:
                assert not (name == bad or name.startswith(bad + ".")), f"{path.name} imports {name}"
