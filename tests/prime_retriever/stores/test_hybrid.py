"""Hybrid search in the store: BM25 sparse vectors beside the dense ones, fused by RRF in one Query API request.

The same calls on Qdrant local mode and Qdrant Edge (real MiniLM embeddings and Qdrant's BM25 of 300 HotpotQA
paragraphs); each fused score is checked against the RRF of the two halves, each searched alone.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import (
    HYBRID_PREFETCH,
    META_POINT_ID,
    RRF_K,
    SPARSE_VECTOR_NAME,
    ScoredDoc,
    VectorStore,
)
from prime_retriever.stores.edge import EdgeStore
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.text.bm25 import Bm25Encoder, SparseVector
from tests.prime_retriever.stores.test_contract import Corpus, exact_top_k, load, load_corpus

K = 10


@pytest.fixture(scope="module")
def bm25() -> Bm25Encoder:
    return Bm25Encoder()


@pytest.fixture(scope="module")
def doc_sparse(bm25: Bm25Encoder) -> list[SparseVector]:
    c = load_corpus()
    return bm25.embed_documents([f"{p['title']}: {p['text']}" for p in c.payloads])


@pytest.fixture(scope="module")
def questions() -> list[str]:
    import json

    from tests.prime_retriever.stores.test_contract import DATA, N_QUERIES

    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line)["question_text"] for _, line in zip(range(N_QUERIES), f, strict=False)]


async def load_hybrid(store: VectorStore, c: Corpus, sparse: list[SparseVector]) -> None:
    await store.ensure_collection(c.dim, c.encoder_name, sparse=True)
    await store.upsert(c.ids, c.vectors, c.payloads, sparse=sparse)


@pytest.fixture(params=["local", "edge"])
async def hybrid_store(request: pytest.FixtureRequest, corpus: Corpus, doc_sparse: list[SparseVector],
                       tmp_path: Path) -> AsyncIterator[VectorStore]:
    store: VectorStore
    if request.param == "local":
        store = QdrantStore("docs", location=":memory:", upsert_batch_size=64)
        await load_hybrid(store, corpus, doc_sparse)
    else:
        edge = EdgeStore(tmp_path / "shard", upsert_batch_size=64)
        await load_hybrid(edge, corpus, doc_sparse)
        await edge.optimize()
        store = edge
    yield store
    await store.close()


async def sparse_only(store: VectorStore, q: SparseVector, limit: int, skip: set[str]) -> list[tuple[str, float]]:
    """The BM25 half alone, (doc id, score) best first, asked of the engine directly (the store has no
    sparse-only search)."""
    if isinstance(store, QdrantStore):
        resp = await store._client.query_points(
            store.collection, query=models.SparseVector(indices=list(q.indices), values=list(q.values)),
            using=SPARSE_VECTOR_NAME, limit=limit + len(skip) + 1, with_payload=True,
        )
        hits = [(str((p.payload or {})["doc_id"]), p.score) for p in resp.points if str(p.id) != META_POINT_ID]
    else:
        import qdrant_edge as qe

        assert isinstance(store, EdgeStore) and store._shard is not None
        points = store._shard.query(qe.QueryRequest(
            limit=limit + len(skip) + 1, with_payload=True,
            query=qe.Query.Nearest(qe.SparseVector(list(q.indices), list(q.values)), using=SPARSE_VECTOR_NAME),
        ))
        hits = [(str((p.payload or {})["doc_id"]), p.score) for p in points if str(p.id) != META_POINT_ID]
    return [h for h in hits if h[0] not in skip][:limit]


def rrf_bounds(halves: list[list[tuple[str, float]]], tol: float = 1e-5) -> dict[str, tuple[float, float]]:
    """Each doc's (lowest, highest) possible RRF score, 1 / (RRF_K + rank) summed over the halves, over
    every order of the hits that tie (within ``tol``) in a half: the engine may order equal scores
    either way, and that order moves the fused score."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for half in halves:
        scores = [x for _, x in half]
        for d, x in half:
            first = next(i for i, y in enumerate(scores) if abs(y - x) <= tol)
            last = max(i for i, y in enumerate(scores) if abs(y - x) <= tol)
            # a tie group cut by the prefetch limit may also have been left out of the prefetch
            lo[d] = lo.get(d, 0.0) + (0.0 if last == len(half) - 1 and last > first else 1 / (RRF_K + last))
            hi[d] = hi.get(d, 0.0) + 1 / (RRF_K + first)
    return {d: (lo[d], hi[d]) for d in hi}


async def test_hybrid_is_the_rrf_of_its_two_halves(hybrid_store: VectorStore, corpus: Corpus, bm25: Bm25Encoder,
                                                   questions: list[str]) -> None:
    """Every hit's score is its RRF score over the dense and the BM25 halves (each searched alone, as the
    prefetches are), and nothing that must outscore the k-th hit is missing."""
    differs = 0
    for qi, text in enumerate(questions):
        q, sq = corpus.queries[qi], bm25.embed_query(text)
        skip = {corpus.ids[qi]}  # exclusions reach both halves
        dense = [(h.doc_id, h.score) for h in await hybrid_store.search(q, HYBRID_PREFETCH, exclude_ids=list(skip))]
        bounds = rrf_bounds([dense, await sparse_only(hybrid_store, sq, HYBRID_PREFETCH, skip)])
        hits = await hybrid_store.search(q, K, exclude_ids=list(skip), sparse=sq)
        assert len(hits) == K and not skip & {h.doc_id for h in hits}
        for h in hits:
            low, high = bounds[h.doc_id]
            assert low - 1e-6 <= h.score <= high + 1e-6, (h, low, high)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        must = {d for d, (low, _) in bounds.items() if low > hits[-1].score + 1e-6}
        assert must <= {h.doc_id for h in hits}
        differs += [h.doc_id for h in hits] != [d for d, _ in dense[:K]]
    assert differs >= len(questions) // 2  # the sparse half changes most rankings


async def test_local_and_edge_fuse_alike(corpus: Corpus, doc_sparse: list[SparseVector], bm25: Bm25Encoder,
                                         questions: list[str], tmp_path: Path) -> None:
    """The same calls on both backends give the same fused hits, but for hits whose halves tie."""
    async with QdrantStore("docs", location=":memory:") as local, EdgeStore(tmp_path / "e") as edge:
        for s in (local, edge):
            await load_hybrid(s, corpus, doc_sparse)
        sparse = [bm25.embed_query(t) for t in questions]
        a = await local.search_batch(corpus.queries, K, sparse=sparse)
        b = await edge.search_batch(corpus.queries, K, sparse=sparse)
        assert [r[0].doc_id for r in a] == [r[0].doc_id for r in b]
        shared = [len({h.doc_id for h in x} & {h.doc_id for h in y}) for x, y in zip(a, b, strict=True)]
        assert sum(shared) >= 0.95 * K * len(questions)


async def test_a_batch_mixes_dense_and_hybrid_rows(hybrid_store: VectorStore, corpus: Corpus, bm25: Bm25Encoder,
                                                   questions: list[str]) -> None:
    rows = await hybrid_store.search_batch(corpus.queries[:2], K, sparse=[None, bm25.embed_query(questions[1])])
    # the same hits, payloads and scores; a batch's cosines may round differently in the last float32
    # bits (local mode computes a matrix product for a batch, a vector product for one query)
    _assert_same_rows(rows[0], await hybrid_store.search(corpus.queries[0], K))  # the dense row: cosine scores
    _assert_same_rows(rows[1], await hybrid_store.search(corpus.queries[1], K, sparse=bm25.embed_query(questions[1])))


def _assert_same_rows(got: list[ScoredDoc], want: list[ScoredDoc]) -> None:
    assert [(h.doc_id, h.payload) for h in got] == [(h.doc_id, h.payload) for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-6)


async def test_the_words_of_a_title_find_it(hybrid_store: VectorStore, corpus: Corpus, bm25: Bm25Encoder) -> None:
    """A vector pointing elsewhere plus the exact words of a paragraph: BM25 brings that paragraph in."""
    target = next(i for i, d in enumerate(corpus.ids) if len(d.split()) >= 3)
    far = int(np.argmin(corpus.vectors @ corpus.vectors[target]))
    dense = [h.doc_id for h in await hybrid_store.search(corpus.vectors[far], K)]
    assert corpus.ids[target] not in dense
    text = corpus.payloads[target]["text"]
    hybrid = [h.doc_id for h in await hybrid_store.search(corpus.vectors[far], K, sparse=bm25.embed_query(text))]
    assert corpus.ids[target] in hybrid[:2]


async def test_filters_and_stop_words(hybrid_store: VectorStore, corpus: Corpus, bm25: Bm25Encoder,
                                      questions: list[str]) -> None:
    flt = models.Filter(must=[models.FieldCondition(key="letter", match=models.MatchValue(value="A"))])
    hits = await hybrid_store.search(corpus.queries[0], K, filter=flt, sparse=bm25.embed_query(questions[0]))
    assert hits and all(h.payload["letter"] == "A" for h in hits)
    assert all(h.doc_id for h in hits)  # the metadata point (no doc id) never appears
    stop = bm25.embed_query("the of and")
    assert stop.indices == ()  # nothing to match: the hybrid search is the dense ranking, RRF-scored
    dense = [h.doc_id for h in await hybrid_store.search(corpus.queries[0], K)]
    assert [h.doc_id for h in await hybrid_store.search(corpus.queries[0], K, sparse=stop)] == dense


async def test_the_layout_is_fixed_at_creation(corpus: Corpus, doc_sparse: list[SparseVector], bm25: Bm25Encoder,
                                               tmp_path: Path) -> None:
    sq = bm25.embed_query("a question")
    for make in (lambda: QdrantStore("docs", path=str(tmp_path / "local")), lambda: EdgeStore(tmp_path / "edge")):
        async with make() as dense_store:
            await load(dense_store, corpus)
            with pytest.raises(StoreError, match="BM25"):
                await dense_store.search(corpus.queries[0], K, sparse=sq)
            with pytest.raises(StoreError, match="BM25"):
                await dense_store.upsert(corpus.ids[:1], corpus.vectors[:1], corpus.payloads[:1], sparse=doc_sparse[:1])
        async with make() as reopened:
            with pytest.raises(StoreError, match="holds no BM25 vectors"):
                await reopened.ensure_collection(corpus.dim, corpus.encoder_name, sparse=True)
    async with QdrantStore("docs", location=":memory:") as hybrid:
        await hybrid.ensure_collection(corpus.dim, corpus.encoder_name, sparse=True)
        with pytest.raises(StoreError, match="sparse="):
            await hybrid.upsert(corpus.ids[:1], corpus.vectors[:1], corpus.payloads[:1])
        with pytest.raises(StoreError, match="2 sparse vectors for 1 rows"):
            await hybrid.upsert(corpus.ids[:1], corpus.vectors[:1], corpus.payloads[:1], sparse=doc_sparse[:2])
        with pytest.raises(StoreError, match="must be SparseVector"):
            await hybrid.search(corpus.queries[0], K, sparse={"indices": [1], "values": [1.0]})  # type: ignore[arg-type]
        assert await hybrid.count() == 0  # nothing was written by the refused calls
    for make_hybrid in (lambda: QdrantStore("docs", path=str(tmp_path / "hl")), lambda: EdgeStore(tmp_path / "he")):
        async with make_hybrid() as first:
            await load_hybrid(first, corpus, doc_sparse)
        async with make_hybrid() as dense_view:  # a hybrid collection opened for dense search
            await dense_view.ensure_collection(corpus.dim, corpus.encoder_name)
            assert [h.doc_id for h in await dense_view.search(corpus.queries[0], K)] == \
                exact_top_k(corpus, corpus.queries[0], K)
            with pytest.raises(StoreError, match="sparse="):  # its documents keep their BM25 vectors
                await dense_view.upsert(corpus.ids[:1], corpus.vectors[:1], corpus.payloads[:1])
            hybrid_hits = await dense_view.search(corpus.queries[0], K, sparse=sq)  # and it still fuses
            assert len(hybrid_hits) == K
