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


# -- request ids (grant, deny) and user ids (upload, search, emergency) -------------------------

REQUEST = "0123456789abcdef" * 4
USER = "pat-0123456789abcdef"
BAD_REQUEST = ["", "abc", "0" * 63, "0" * 65, "A" * 64, "0" * 64 + "\n", " " + "0" * 64, "g-" + "0" * 32,
               "rec-" + "0" * 32, "../" + REQUEST]
BAD_USER = ["", "pat", "pat-", "pat-0123456", "PAT-01234567", "pat-0123456G", "pat-01234567\n",
            " pat-01234567", "pat_01234567", "pat-01234567/../x", "0123456789abcdef"]


def _id_commands(request: str, user: str, tmp_path: Path) -> list[tuple[str, list[str]]]:
    """Every subcommand that takes a request or user id: (the flag checked, argv)."""
    file = tmp_path / "scan.bin"
    return [
        ("--request", ["grant", "--request", request]),
        ("--request", ["grant", "--request", request, "--expires-at-ms", "1"]),
        ("--request", ["deny", "--request", request, "--reason", "no"]),
        ("--patient", ["upload", "--patient", user, "--file", str(file), "--type", "omics"]),
        ("--patient", ["search", "--patient", user]),
        ("--for", ["emergency", "--record", GOOD, "--for", user, "--reason", "er"]),
    ]


def _run_refused(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    rc = user.main(["--node", "http://127.0.0.1:9", *argv, "--wallet", str(tmp_path / "w")])
    captured = capsys.readouterr()
    assert rc == 1, argv
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("request_id", BAD_REQUEST)
def test_a_malformed_request_id_is_refused_before_any_request(
        request_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_session: list[str]) -> None:
    for flag, argv in _id_commands(request_id, USER, tmp_path):
        if flag != "--request":
            continue
        line = _run_refused(argv, tmp_path, capsys)
        assert line.startswith("error: --request wants a request id, 64 lowercase hex digits"), line
        assert line.endswith(f"not {request_id!r}"), line
    assert no_session == []


@pytest.mark.parametrize("user_id", BAD_USER)
def test_a_malformed_user_id_is_refused_before_any_request(
        user_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_session: list[str]) -> None:
    for flag, argv in _id_commands(REQUEST, user_id, tmp_path):
        if flag == "--request":
            continue
        line = _run_refused(argv, tmp_path, capsys)
        assert line.startswith(f"error: {flag} wants a user id, a lowercase prefix, '-' and 8 to 64 "
                               "lowercase hex digits"), line
        assert line.endswith(f"not {user_id!r}"), line
    assert no_session == []
    assert list(tmp_path.iterdir()) == []


def test_well_formed_request_and_user_ids_go_on_to_the_session(
        tmp_path: Path, no_session: list[str]) -> None:
    for _, argv in _id_commands(REQUEST, USER, tmp_path):
        with pytest.raises(AssertionError, match="a session was opened"):
            user.main(["--node", "http://127.0.0.1:9", *argv, "--wallet", str(tmp_path / "w")])
    assert no_session == ["grant", "grant", "deny", "upload", "search", "emergency"]


def test_the_request_pattern_is_the_form_of_a_transaction_id() -> None:
    """A re-key request's id is its transaction's id as the contract sees it (``tx_id.hex()``)."""
    from pienode.ledger.tx import TX_ID_RE, Transaction

    tx = Transaction("pie-000000000000", "contract_call", USER, 1, {"x": 1})
    assert TX_ID_RE.fullmatch(tx.tx_id.hex())


def test_search_without_a_patient_is_not_checked(tmp_path: Path, no_session: list[str]) -> None:
    with pytest.raises(AssertionError):
        user.main(["search", "--wallet", str(tmp_path / "w")])
    assert no_session == ["search"]


def test_a_malformed_record_id_is_named_first_when_emergency_has_two_bad_ids(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_session: list[str]) -> None:
    line = _run_refused(["emergency", "--record", "rec-x", "--for", "x", "--reason", "er"], tmp_path, capsys)
    assert line.startswith("error: --record wants a record id"), line
    assert no_session == []
