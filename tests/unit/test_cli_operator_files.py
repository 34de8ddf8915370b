"""``pienode files stat|pin|unpin CID``: the CID goes into the URL path, so a malformed one is
refused on the client, before any request (pienode/cli/operator.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pienode.cli import operator

GOOD = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
MALFORMED = ["", "../x", "bafy", GOOD + "\n", " " + GOOD, GOOD.upper(), GOOD + "/../../files/gc",
             "rec-" + "0" * 32]


class _NoClient:
    opened: list[str] = []

    def __init__(self, url: str, **_: Any) -> None:
        _NoClient.opened.append(url)
        raise AssertionError("a client was opened")


@pytest.fixture()
def no_client(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _NoClient.opened = []
    monkeypatch.setattr(operator, "NodeClient", _NoClient)
    return _NoClient.opened


@pytest.mark.parametrize("cid", MALFORMED)
@pytest.mark.parametrize("action", ["stat", "pin", "unpin"])
def test_a_malformed_cid_is_refused_before_any_request(
        action: str, cid: str, capsys: pytest.CaptureFixture[str], no_client: list[str]) -> None:
    rc = operator.main(["files", action, "--node", "http://127.0.0.1:9", cid])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CID wants a base32 CIDv1"), lines
    assert lines[0].endswith(f"not {cid!r}")
    assert no_client == []


@pytest.mark.parametrize("action", ["stat", "pin", "unpin"])
def test_a_well_formed_cid_goes_on_to_the_node(action: str, no_client: list[str]) -> None:
    with pytest.raises(AssertionError, match="a client was opened"):
        operator.main(["files", action, "--node", "http://127.0.0.1:9", GOOD])
    assert no_client == ["http://127.0.0.1:9"]


def test_ls_takes_no_cid_and_is_not_checked(no_client: list[str]) -> None:
    with pytest.raises(AssertionError):
        operator.main(["files", "ls", "--node", "http://127.0.0.1:9"])
    assert no_client == ["http://127.0.0.1:9"]
