"""Shared by the framework integration tests: a small real HotpotQA corpus, conversations, a random
predictor with link expansion, and ``PredictiveRetriever.search`` over prime's own store of the corpus;
and, for the component tests, a tiny linked corpus (``DICE_DOCS``) with a conversation that names it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qdrant_client import models

from prime_retriever import Document, EmbeddingPredictor, LinkGraph, PredictiveRetriever, SearchResult, TextEncoder
from prime_retriever.backends.inference import EagerPredictor
from prime_retriever.model.random_predictor import random_predictor
from prime_retriever.retrieval.link_graph import LinkExpansion
from prime_retriever.stores.qdrant import QdrantStore

__all__ = [
    "DICE_CONTEXT",
    "DICE_DOCS",
    "Conversation",
    "K",
    "assert_same_hits",
    "conversations",
    "hotpot_corpus",
    "linked_backend",
    "linked_predictor",
    "prime_search",
]

K = 8

# a tiny corpus whose titles link each document to the next, and a conversation naming its first title
DICE_DOCS = [
    Document("demon", "Demon Dice is a collectible dice game created by Lester Smith.", "Demon Dice"),
    Document("smith", "Lester Smith designed Dragon Dice for TSR.", "Lester Smith"),
    Document("dragon", "Dragon Dice is a dice game published by TSR in 1995.", "Dragon Dice"),
]
DICE_CONTEXT = ["user: I played Demon Dice.", "assistant: What would you like to know?"]


@dataclass(frozen=True)
class Conversation:
    context: list[str]
    query: str


def _questions(data_dir: Path, n: int) -> list[dict[str, object]]:
    rows = json.loads((data_dir / "hotpotqa" / "hipporag_train100.json").read_text(encoding="utf-8"))
    return list(rows[:n])


def hotpot_corpus(data_dir: Path, n_questions: int = 12) -> list[Document]:
    """The context paragraphs of the first questions of a shipped HotpotQA file (about 10 per question)."""
    docs: dict[str, Document] = {}
    for row in _questions(data_dir, n_questions):
        for title, sentences in row["context"]:  # type: ignore[attr-defined]
            docs.setdefault(title, Document(id=title, title=title, text="".join(sentences)))
    return list(docs.values())


def conversations(data_dir: Path, n: int = 6) -> list[Conversation]:
    """Multi-turn conversations ending in a HotpotQA question (the first turn names a corpus title)."""
    out: list[Conversation] = []
    for row in _questions(data_dir, n):
        first_title = str(row["context"][0][0])  # type: ignore[index]
        out.append(Conversation(
            [f"user: I was reading about {first_title}.", "assistant: What would you like to know?"],
            str(row["question"]),
        ))
    return out


def linked_predictor() -> EmbeddingPredictor:
    """A small random residual predictor trained-shape for link expansion (3 candidates), off the query."""
    return random_predictor(384, seed=0, perturb=0.05, link_candidates=3, max_context_length=8)


def linked_backend() -> EagerPredictor:
    """``linked_predictor`` served eagerly: the backend the framework components get (no checkpoint at hand)."""
    return EagerPredictor(linked_predictor())


async def prime_search(
    docs: Sequence[Document], encoder: TextEncoder, convs: Sequence[Conversation],
    *, k: int = K, filter: models.Filter | None = None,
) -> list[SearchResult]:
    """``PredictiveRetriever.search`` with ``linked_predictor`` for each conversation, over prime's own
    in-memory store of ``docs``: the reference every framework path must equal."""
    model = linked_predictor()
    graph = LinkGraph.build(docs)
    expansion = LinkExpansion.for_config(model.config, graph)
    store = QdrantStore("reference", location=":memory:")
    async with PredictiveRetriever(EagerPredictor(model), encoder, store, expansion=expansion) as rt:
        await rt.index(docs, progress=False)
        return [await rt.search(c.context, c.query, k=k, filter=filter) for c in convs]


def assert_same_hits(ours: Sequence[tuple[str, float]], reference: SearchResult) -> None:
    """Same doc ids in the same order, scores within 1e-5."""
    assert [d for d, _ in ours] == reference.doc_ids
    for (doc_id, score), hit in zip(ours, reference, strict=True):
        assert math.isclose(score, hit.score, abs_tol=1e-5), (doc_id, score, hit.score)
