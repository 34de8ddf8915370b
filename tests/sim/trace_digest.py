"""A refactoring check for the pure replica: one SHA-256 per simulation seed over every entry
point's inputs and returned actions, plus each replica's final stats, view, delivered and
stable sequence numbers. Identical output from two trees means the replica behaved the same.

    PYTHONPATH=TREE_A python3 -m tests.sim.trace_digest 0 520 > a.txt
    PYTHONPATH=TREE_B python3 -m tests.sim.trace_digest 0 520 > b.txt
    cmp a.txt b.txt
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import pienode
from pienode.consensus.replica import Replica
from tests.sim.simulator import Sim

ENTRY_POINTS = ("start", "submit", "on_message", "on_timeout", "on_executed", "on_state_transferred")


def _record_calls(digest: list[Any]) -> None:
    """Wrap the replica's entry points so each call feeds ``digest[0]``."""
    for name in ENTRY_POINTS:
        orig = getattr(Replica, name)

        def traced(self: Replica, *a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
            out = _orig(self, *a, **k)
            digest[0].update(repr((self.node_id, _name, a, k, out)).encode())
            return out

        setattr(Replica, name, traced)


def main(lo: int, hi: int) -> None:
    digest: list[Any] = [None]
    _record_calls(digest)
    print("#", pienode.__file__, file=sys.stderr)
    for seed in range(lo, hi):
        digest[0] = hashlib.sha256()
        sim = Sim(seed).run()
        assert sim.done(), seed
        for i in sorted(sim.nodes):
            r = sim.nodes[i].replica
            state = (i, sorted(r.stats.items()), r.view, r.active, r.last_delivered_seq, r.stable_checkpoint)
            digest[0].update(repr(state).encode())
        print(seed, digest[0].hexdigest(), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
