"""The benchmark's BM25 reference row: bm25s over the corpus, within scope and without exclusions."""

from __future__ import annotations

from prime_retriever.text.documents import Document
from training.bench.hybrid import BM25Ranker

DOCS = [
    Document("cats", "Cats are small domesticated carnivores that purr.", "Cat"),
    Document("dogs", "Dogs are loyal animals and bark at strangers.", "Dog"),
    Document("lions", "Lions are big cats living in prides.", "Lion", scope="zoo"),
    Document("tigers", "Tigers are the largest cats; they hunt alone.", "Tiger", scope="zoo"),
    Document("cars", "Cars have engines and four wheels.", "Car"),
]


def test_bm25_ranks_term_matches_within_scope_and_without_exclusions() -> None:
    bm25 = BM25Ranker(DOCS)
    ranked = bm25.rank("which cats purr?", 5)
    assert ranked[0] == "cats" and set(ranked) == {"cats", "lions", "tigers"}  # "cat" stems alike; no match no hit
    assert bm25.rank("cats", 5, scope="zoo") == bm25.rank("cats", 5, scope="zoo", exclude_ids=["cats"])
    assert set(bm25.rank("cats", 5, scope="zoo")) == {"lions", "tigers"}
    assert "cats" not in bm25.rank("cats purr", 5, exclude_ids=["cats"])
    assert bm25.rank("quantum chromodynamics", 5) == []
    assert bm25.rank("the of and", 5) == []  # stop words only (bm25s alone raised IndexError: a LOO run died)
