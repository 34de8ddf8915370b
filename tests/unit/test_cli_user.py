"""``pie``: arguments checked on the client, before any request (pienode/cli/user.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pienode.cli import user

GOOD = "rec-" + "0123456789abcdef" * 2
MALFORMED = ["garbage/../x", "rec-", "rec-" + "0" * 31, "rec-" + "0" * 33, "REC-" + "0" * 32,
             "rec-" + "A" * 32, "rec-" + "0" * 32 + "\n", " rec-" + "0" * 32, "../" + GOOD]


def _commands(record: str, out: Path) -> list[list[str]]:
    """Every subcommand that takes --record, with its other required arguments."""
    return [
        ["request", "--record", record, "--purpose", "treatment"],
        ["fetch", "--record", record, "--out", str(out)],
        ["emergency", "--record", record, "--for", "p-00000000", "--reason", "er"],
        ["rotate", "--record", record],
        ["policy", "--record", record, "--level", "private"],
        ["audit", "--record", record],
    ]


@pytest.fixture()
def no_session(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails loudly if a command gets as far as opening a session (wallet, then requests)."""
    opened: list[str] = []

    def session(args: Any) -> Any:
        opened.append(args.command)
        raise AssertionError("a session was opened")

    monkeypatch.setattr(user, "_session", session)
    return opened


@pytest.mark.parametrize("record", MALFORMED)
def test_a_malformed_record_id_is_refused_before_any_request(
        record: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_session: list[str]) -> None:
    out = tmp_path / "out.bin"
    for argv in _commands(record, out):
        rc = user.main(["--node", "http://127.0.0.1:9", *argv, "--wallet", str(tmp_path / "w")])
        captured = capsys.readouterr()
        assert rc == 1, argv
        assert captured.out == ""
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --record wants a record id"), lines
        assert "'rec-' and 32 lowercase hex digits" in lines[0]
    assert no_session == []
    assert not out.exists()


def test_a_well_formed_record_id_goes_on_to_the_session(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_session: list[str]) -> None:
    for argv in _commands(GOOD, tmp_path / "out.bin"):
        with pytest.raises(AssertionError, match="a session was opened"):
            user.main(["--node", "http://127.0.0.1:9", *argv, "--wallet", str(tmp_path / "w")])
    assert no_session == ["request", "fetch", "emergency", "rotate", "policy", "audit"]


def test_audit_without_a_record_is_not_checked(tmp_path: Path, no_session: list[str]) -> None:
    with pytest.raises(AssertionError):
        user.main(["audit", "--wallet", str(tmp_path / "w")])
    assert no_session == ["audit"]
