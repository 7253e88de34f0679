"""The opt-in second stage: a search's top hits re-ordered by a cross-encoder.

A cross-encoder reads the query and each passage together (:class:`~prime_retriever.text.cross_encoder.CrossEncoder`),
so it ranks better than any single vector can, at a full transformer forward per pair: on a CPU it can
afford a few hits per search, never the corpus. :class:`Reranker` re-orders the first ``top_n`` hits by
its logits; the hits after them keep their order and their store scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prime_retriever.errors import RetrieverError
from prime_retriever.stores.base import ScoredDoc
from prime_retriever.text.cross_encoder import CrossEncoder

__all__ = ["Reranker", "passage_text"]


def passage_text(payload: Mapping[str, Any]) -> str:
    """The passage a hit's payload holds, as the Y-Encoder saw it: ``"title: text"``, or the text alone.

    Raises:
        RetrieverError: the payload has no ``text`` string (a collection this library did not write).
    """
    text = payload.get("text")
    if not isinstance(text, str):
        raise RetrieverError("a hit's payload has no 'text' string to rerank; pass Reranker(text_of=...)")
    title = payload.get("title")
    return f"{title}: {text}" if isinstance(title, str) and title else text


@dataclass(frozen=True)
class Reranker:
    """Re-order the first ``top_n`` hits of a search by ``cross_encoder``'s relevance logits.

    Args:
        cross_encoder: scores (query, passage) pairs.
        top_n: hits reranked per search (a search fetches at least this many); the cost grows with it.
        text_of: a hit's passage from its payload (default :func:`passage_text`).
    """

    cross_encoder: CrossEncoder
    top_n: int = 10
    text_of: Callable[[Mapping[str, Any]], str] = field(default=passage_text)

    def __post_init__(self) -> None:
        if self.top_n < 1:
            raise ValueError(f"Reranker.top_n must be >= 1, got {self.top_n}")

    def rerank(self, query: str, docs: Sequence[ScoredDoc]) -> list[ScoredDoc]:
        """``docs`` (best first) with the first ``top_n`` re-ordered by the cross-encoder; their ``score``
        becomes its logit. Ties keep the first stage's order.

        Raises:
            EncoderError: the cross-encoder failed; RetrieverError: a hit has no passage text.
        """
        head = list(docs[: self.top_n])
        if not head:
            return []
        logits = self.cross_encoder.score(query, [self.text_of(d.payload) for d in head])  # (n,)
        order = np.argsort(-logits, kind="stable")
        reranked = [ScoredDoc(head[i].doc_id, float(logits[i]), head[i].payload) for i in order]
        return [*reranked, *docs[self.top_n :]]
