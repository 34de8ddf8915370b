"""Identifiers are checked whole: a trailing newline (which ``re.match`` with ``$`` lets
through) is refused like any other stray character."""

from __future__ import annotations

import pytest

from pienode.errors import ValidationError
from pienode.execution.validator import NAME_RE
from pienode.ledger import kinds
from pienode.ledger.sharing import GRANT_ID_RE
from tests.helpers import upload_body

GOOD = {
    "record": (kinds.RECORD_ID_RE, "rec-" + "ab" * 16),
    "grant": (GRANT_ID_RE, "g-" + "cd" * 16),
    "user": (kinds.ID_RE, "pat-0123abcd"),
    "cid": (kinds.CID_RE, "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"),
    "summary field": (kinds.SUMMARY_FIELD_RE, "body_part"),
    "contract name": (NAME_RE, "record_search"),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_whole_identifier_passes_and_any_suffix_fails(name: str) -> None:
    pattern, good = GOOD[name]
    assert pattern.fullmatch(good)
    for suffix in ("\n", " ", "x\n", "\r\n"):
        assert not pattern.fullmatch(good + suffix), repr(good + suffix)


def test_upload_with_a_newline_after_its_record_id_is_refused() -> None:
    body = upload_body("pat-0123abcd")
    kinds._check_upload(body)
    body["record_id"] += "\n"
    with pytest.raises(ValidationError, match="record_id"):
        kinds._check_upload(body)
