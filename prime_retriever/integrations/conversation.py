"""A framework's chat history as the predictor's context turns.

The predictor was trained on turns as ``"role: text"`` strings, oldest first; with no history it
sees the query as the only turn (as query-only training rows did).
"""

from __future__ import annotations

from collections.abc import Iterable

from prime_retriever import PredictorError

__all__ = ["context_turns"]


def context_turns(history: Iterable[tuple[str, str]] | Iterable[str], query: str) -> list[str]:
    """``history``, as ``(role, text)`` pairs or ready strings (oldest first), as context turns for ``query``.

    Empty messages are dropped; an empty history gives ``[query]``.

    Raises:
        PredictorError: the query is empty.
    """
    if not isinstance(query, str) or not query.strip():
        raise PredictorError("empty query")
    turns: list[str] = []
    for item in history:
        if isinstance(item, str):
            text = item
        else:
            role, content = item
            text = f"{role}: {content}" if content.strip() else ""
        if text.strip():
            turns.append(text)
    return turns or [query]
