"""Documents: the text the Y-Encoder sees, the payload stored with a point, and scopes."""

from __future__ import annotations

import pytest
from qdrant_client import models

from prime_retriever.text.documents import SCOPE_KEY, Document, scope_filter


def test_encoding_text_prepends_the_title_only_when_there_is_one() -> None:
    assert Document(id="a", text="body", title="Head").encoding_text == "Head: body"
    assert Document(id="a", text="body").encoding_text == "body"


def test_payload_carries_the_scope_only_when_set() -> None:
    assert Document(id="a", text="t", title="T").payload() == {"doc_id": "a", "title": "T", "text": "t"}
    assert Document(id="a", text="t", scope="alice").payload()[SCOPE_KEY] == "alice"


def test_scope_filter_matches_the_scope_key() -> None:
    flt = scope_filter("alice")
    assert isinstance(flt, models.Filter) and flt.must is not None
    cond = flt.must[0]  # type: ignore[index]
    assert isinstance(cond, models.FieldCondition) and cond.key == SCOPE_KEY
    assert isinstance(cond.match, models.MatchValue) and cond.match.value == "alice"


@pytest.mark.parametrize("bad", ["", None, 3])
def test_scope_filter_refuses_an_empty_or_non_str_scope(bad: object) -> None:
    with pytest.raises(ValueError, match="scope"):
        scope_filter(bad)  # type: ignore[arg-type]
