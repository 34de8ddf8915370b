"""The front door: `pienode demo` runs the whole EMR story on four real node processes and
exits 0 only if every step it narrates checked out (issue 6's acceptance story)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.cluster
def test_demo_exits_zero_and_tells_the_whole_story(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pienode.cli.operator", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for line in ("ok: both records found", "request refused", "Dan's copy is byte-identical",
                 "no file left for eve", "Erin's copy is byte-identical", "re-keyed after the grant",
                 "the audit holds every kind of event", "no plaintext in any home", "Demo complete."):
        assert line in out, line
    assert out.count("blocks,") == 4 and "FAILED" not in out
