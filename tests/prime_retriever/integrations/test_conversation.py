"""A chat history as context turns."""

from __future__ import annotations

import pytest

from prime_retriever import PredictorError
from prime_retriever.integrations.conversation import context_turns


def test_pairs_and_strings_become_turns() -> None:
    assert context_turns([("user", "hi"), ("assistant", "hello"), ("user", "  ")], "q") == ["user: hi",
                                                                                             "assistant: hello"]
    assert context_turns(["user: hi", " "], "q") == ["user: hi"]


def test_an_empty_history_gives_the_query_as_the_only_turn() -> None:
    assert context_turns([], "what is it?") == ["what is it?"]


def test_an_empty_query_is_refused() -> None:
    with pytest.raises(PredictorError):
        context_turns([], " ")
