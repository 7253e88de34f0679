"""The vector-store contract: the same calls on every backend, with real MiniLM embeddings of HotpotQA paragraphs.

Backends (the ``store`` fixture of ``conftest.py``): ``QdrantStore`` over ``AsyncQdrantClient(location=":memory:")``
(exact search) and ``EdgeStore`` (Qdrant Edge, in-process Rust engine) in ``tmp_path``; no mocks. What only one
backend does is tested in ``test_qdrant.py`` (local mode and server) and ``test_edge.py`` (Qdrant Edge).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import models

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import META_POINT_ID, ScoredDoc, VectorStore
from prime_retriever.stores.edge import EdgeStore
from prime_retriever.stores.qdrant import QdrantStore
from training.data import data_dir

DATA = data_dir() / "hotpotqa" / "ircot_dev500.jsonl"  # $PRIME_DATA_DIR or ../shared/data
N_PARAGRAPHS = 300
N_QUERIES = 24
K = 10
SCORE_TOL = 1e-4


@dataclass(frozen=True)
class Corpus:
    """Unique HotpotQA paragraphs (doc id = title) and questions, embedded by the real MiniLM."""

    ids: list[str]
    payloads: list[dict[str, str]]
    vectors: npt.NDArray[np.float32]  # (N, D), L2-normalised
    queries: npt.NDArray[np.float32]  # (Q, D), L2-normalised questions
    encoder_name: str
    dim: int


@functools.cache
def load_corpus(n_paragraphs: int = N_PARAGRAPHS, n_queries: int = N_QUERIES) -> Corpus:
    """Read the first ``n_paragraphs`` unique paragraphs and ``n_queries`` questions, and encode them."""
    if not DATA.exists():
        pytest.skip(f"HotpotQA data not found at {DATA}")
    from prime_retriever.text.encoders import HFTextEncoder

    ids: list[str] = []
    payloads: list[dict[str, str]] = []
    questions: list[str] = []
    seen: set[str] = set()
    with DATA.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if len(questions) < n_queries:
                questions.append(row["question_text"])
            for ctx in row["contexts"]:
                title = ctx["title"]
                if title in seen or len(ids) >= n_paragraphs:
                    continue
                seen.add(title)
                ids.append(title)
                payloads.append({"title": title, "text": ctx["paragraph_text"], "letter": title[:1].upper()})
            if len(ids) >= n_paragraphs and len(questions) >= n_queries:
                break
    encoder = HFTextEncoder()
    texts = [f"{p['title']}: {p['text']}" for p in payloads]
    vectors = encoder.encode(texts, batch_size=32, show_progress=False)  # (N, D)
    queries = encoder.encode(questions, batch_size=32, show_progress=False)  # (Q, D)
    return Corpus(ids, payloads, vectors, queries, encoder.name, encoder.dim)


def assert_same_ranking(a: Sequence[ScoredDoc], b: Sequence[ScoredDoc], tol: float = SCORE_TOL) -> None:
    """Same length, same scores rank by rank (within ``tol``), and the same ids except among ties.

    Two hits whose scores differ by less than ``tol`` may be swapped or, at the k-th place, replaced
    by another hit of the same score; every hit clearly above the k-th score must be in both lists.
    """
    assert len(a) == len(b)
    if not a:
        return
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=tol)
    kth = min(a[-1].score, b[-1].score)
    clear_a = {h.doc_id for h in a if h.score > kth + tol}
    clear_b = {h.doc_id for h in b if h.score > kth + tol}
    assert clear_a == clear_b
    assert clear_a <= {h.doc_id for h in b} and clear_b <= {h.doc_id for h in a}
    for h in a:  # where a score is unique in its neighbourhood, its rank must match exactly
        twins = [x for x in b if abs(x.score - h.score) < tol]
        if len(twins) == 1 and h.score > kth + tol:
            assert twins[0].doc_id == h.doc_id


async def load(store: VectorStore, c: Corpus) -> None:
    await store.ensure_collection(c.dim, c.encoder_name)
    await store.upsert(c.ids, c.vectors, c.payloads)


def exact_top_k(c: Corpus, q: npt.NDArray[np.float32], k: int, skip: set[str] | None = None) -> list[str]:
    """Brute-force cosine top-k doc ids (vectors are unit-norm, so cosine = dot product)."""
    scores = c.vectors @ q  # (N,)
    order = np.argsort(-scores, kind="stable")
    return [c.ids[i] for i in order if not skip or c.ids[i] not in skip][:k]


# -- both backends -------------------------------------------------------------------------------------


def test_protocol_conformance(tmp_path: Path) -> None:
    assert isinstance(QdrantStore(location=":memory:"), VectorStore)
    assert isinstance(EdgeStore(tmp_path / "x"), VectorStore)


async def test_count_and_existing_ids(store: VectorStore, corpus: Corpus) -> None:
    assert await store.count() == len(corpus.ids)  # the metadata point is not counted
    probe = [*corpus.ids[:5], "no such doc", "another missing"]
    assert await store.existing_ids(probe) == set(corpus.ids[:5])
    assert await store.existing_ids([]) == set()


async def test_get_vectors_returns_stored_unit_vectors(store: VectorStore, corpus: Corpus) -> None:
    probe = [corpus.ids[7], "no such doc", corpus.ids[2], corpus.ids[7]]
    got = await store.get_vectors(probe)
    assert set(got) == {corpus.ids[7], corpus.ids[2]}
    for doc_id, vec in got.items():
        want = corpus.vectors[corpus.ids.index(doc_id)]
        assert vec.dtype == np.float32 and vec.shape == (corpus.dim,)
        np.testing.assert_allclose(vec, want / np.linalg.norm(want), atol=1e-5)
    assert await store.get_vectors([]) == {}


async def test_search_matches_brute_force(store: VectorStore, corpus: Corpus) -> None:
    for q in corpus.queries[:8]:
        hits = await store.search(q, K)
        assert [h.doc_id for h in hits][:3] == exact_top_k(corpus, q, 3)
        assert all(h.doc_id != META_POINT_ID and "title" in h.payload for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_reupsert_is_idempotent(store: VectorStore, corpus: Corpus) -> None:
    before = await store.count()
    changed = [{**p, "text": "rewritten"} for p in corpus.payloads[:50]]
    await store.upsert(corpus.ids[:50], corpus.vectors[:50], changed)
    assert await store.count() == before
    hit = (await store.search(corpus.vectors[0], 1))[0]
    assert hit.doc_id == corpus.ids[0]
    assert hit.payload["text"] == "rewritten"
    assert hit.score == pytest.approx(1.0, abs=1e-4)


async def test_exclude_ids(store: VectorStore, corpus: Corpus) -> None:
    q = corpus.queries[0]
    full = await store.search(q, K)
    excluded = [full[0].doc_id, full[2].doc_id]
    hits = await store.search(q, K, exclude_ids=excluded)
    ids = [h.doc_id for h in hits]
    assert not set(excluded) & set(ids)
    assert ids[: K - 2] == [h.doc_id for h in full if h.doc_id not in excluded]
    assert ids == exact_top_k(corpus, q, K, skip=set(excluded))


async def test_payload_filter_pass_through(store: VectorStore, corpus: Corpus) -> None:
    q = corpus.queries[1]
    letter = corpus.payloads[0]["letter"]
    must = models.Filter(must=[models.FieldCondition(key="letter", match=models.MatchValue(value=letter))])
    hits = await store.search(q, K, filter=must)
    expected_pool = {i for i, p in zip(corpus.ids, corpus.payloads, strict=True) if p["letter"] == letter}
    assert hits and all(h.payload["letter"] == letter for h in hits)
    assert [h.doc_id for h in hits] == [d for d in exact_top_k(corpus, q, len(corpus.ids)) if d in expected_pool][:K]

    letters = sorted({p["letter"] for p in corpus.payloads})[:3]
    any_not = models.Filter(must_not=[models.FieldCondition(key="letter", match=models.MatchAny(any=letters))])
    hits = await store.search(q, K, filter=any_not, exclude_ids=[corpus.ids[-1]])
    assert len(hits) == K
    assert all(h.payload["letter"] not in letters and h.doc_id != corpus.ids[-1] for h in hits)


async def test_scope_filter_keeps_one_users_documents(store: VectorStore, corpus: Corpus) -> None:
    """Documents with a scope (one user's memory) beside unscoped ones: ``scope_filter`` returns only
    that scope's documents, ranked exactly, on local mode and on Qdrant Edge alike."""
    from prime_retriever.text.documents import Document, scope_filter

    mine = [Document(f"mem{i}", f"memory {i}", scope="alice" if i % 2 else "bob") for i in range(6)]
    vecs = corpus.queries[:6] + 0.01  # (6, D): near the queries, so they compete with the corpus
    await store.upsert([d.id for d in mine], vecs, [d.payload() for d in mine])
    q = corpus.queries[1]
    unscoped = await store.search(q, K)
    assert "mem1" in [h.doc_id for h in unscoped]  # without the filter, bob's and the corpus compete
    hits = await store.search(q, K, filter=scope_filter("alice"))
    alice = [d.id for d in mine if d.scope == "alice"]
    sims = {d: float(np.dot(v, q) / np.linalg.norm(v) / np.linalg.norm(q)) for d, v in zip(
        [d.id for d in mine], vecs, strict=True)}
    assert [h.doc_id for h in hits] == sorted(alice, key=lambda d: -sims[d])
    assert all(h.payload["scope"] == "alice" for h in hits)
    assert await store.search(q, K, filter=scope_filter("carol")) == []
    with pytest.raises(ValueError, match="non-empty"):
        scope_filter("")


async def test_search_batch_equals_individual_searches(store: VectorStore, corpus: Corpus) -> None:
    qs = corpus.queries[:6]  # (6, D)
    letter = corpus.payloads[3]["letter"]
    filters: list[models.Filter | None] = [None] * 6
    filters[2] = models.Filter(must=[models.FieldCondition(key="letter", match=models.MatchValue(value=letter))])
    excludes: list[list[str]] = [[] for _ in range(6)]
    excludes[4] = [corpus.ids[0], corpus.ids[1]]
    batch = await store.search_batch(qs, K, filters=filters, exclude_ids=excludes)
    single = [await store.search(qs[i], K, filter=filters[i], exclude_ids=excludes[i]) for i in range(6)]
    assert len(batch) == 6
    for b, s in zip(batch, single, strict=True):
        assert_same_ranking(b, s, tol=1e-5)
    assert await store.search_batch(np.zeros((0, corpus.dim), np.float32), K) == []
    with pytest.raises(StoreError):
        await store.search_batch(qs, K, filters=[None])


async def test_bad_shapes_raise_store_error(store: VectorStore, corpus: Corpus) -> None:
    with pytest.raises(StoreError, match="dim"):
        await store.search(np.ones(corpus.dim + 1, np.float32), K)
    before = await store.count()
    with pytest.raises(StoreError, match="got 3 vectors for 2 ids"):
        await store.upsert(["a", "b"], corpus.vectors[:3], [{}, {}])
    with pytest.raises(StoreError, match="1 payloads for 2 ids"):
        await store.upsert(["a", "b"], corpus.vectors[:2], [{}])
    assert await store.count() == before  # a refused upsert writes nothing
    with pytest.raises(StoreError, match="NaN"):
        await store.upsert(["a"], np.full((1, corpus.dim), np.nan, np.float32), [{}])
    for k in (0, -1, 2.5, True, 2**64):
        with pytest.raises(StoreError, match="k must be"):
            await store.search(corpus.vectors[0], k)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="k must be"):
            await store.search_batch(corpus.vectors[:2], k)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="not a numeric"):
        await store.upsert(["a", "b"], [[1.0] * corpus.dim, [1.0, 0.0]], [{}, {}])  # ragged rows
    with pytest.raises(StoreError, match="not a numeric"):
        await store.search("abcd", K)
    with pytest.raises(StoreError, match="str doc ids"):
        await store.upsert([1], corpus.vectors[:1], [{}])  # type: ignore[list-item]
    with pytest.raises(StoreError, match="str doc ids"):
        await store.existing_ids([1])  # type: ignore[list-item]
    with pytest.raises(StoreError, match=r"rows \[1\] are all-zero"):
        await store.upsert(["a", "b"], np.vstack([corpus.vectors[0], np.zeros(corpus.dim, np.float32)]), [{}, {}])
    with pytest.raises(StoreError, match="all-zero"):
        await store.search(np.zeros(corpus.dim, np.float32), K)
    with pytest.raises(StoreError, match="exclude_ids must be a sequence of str doc ids"):
        await store.search(corpus.vectors[0], K, exclude_ids="doc-1")
    assert await store.count() == before


async def test_async_with_closes(corpus: Corpus, tmp_path: Path) -> None:
    async with EdgeStore(tmp_path / "s") as edge, QdrantStore(location=":memory:") as local:
        for s in (edge, local):
            await load(s, corpus)
            assert await s.count() == len(corpus.ids)
    for s in (edge, local):
        with pytest.raises(StoreError, match="closed"):
            await s.count()
        await s.close()  # idempotent


async def test_use_before_ensure_collection_raises(tmp_path: Path) -> None:
    for s in (QdrantStore(location=":memory:"), EdgeStore(tmp_path / "s")):
        with pytest.raises(StoreError, match="ensure_collection"):
            await s.count()
        await s.close()


# -- congruence: local (exact) vs edge -----------------------------------------------------------------


async def test_local_and_edge_agree(local_store: QdrantStore, edge_store: EdgeStore, corpus: Corpus) -> None:
    """Same searches, same top-k (score-sorted, ties tolerated), after edge.optimize()."""
    for q in corpus.queries:
        assert_same_ranking(await local_store.search(q, K), await edge_store.search(q, K))
    excl = [corpus.ids[:3], *([[]] * (len(corpus.queries) - 1))]
    a = await local_store.search_batch(corpus.queries, K, exclude_ids=excl)
    b = await edge_store.search_batch(corpus.queries, K, exclude_ids=excl)
    for x, y in zip(a, b, strict=True):
        assert_same_ranking(x, y)


def test_ties_rank_by_doc_id() -> None:
    from prime_retriever.stores.base import ScoredDoc, ranked

    docs = [ScoredDoc("b", 0.5, {}), ScoredDoc("c", 0.9, {}), ScoredDoc("a", 0.5, {})]
    assert [d.doc_id for d in ranked(docs)] == ["c", "a", "b"]
