"""Tests of the vector-store layer on real backends with real MiniLM embeddings of HotpotQA paragraphs.

Backends: ``QdrantStore`` over ``AsyncQdrantClient(location=":memory:")`` (exact search) and
``EdgeStore`` (Qdrant Edge, in-process Rust engine) in ``tmp_path``. No mocks: the only fake
is a raw TCP listener that never answers, standing in for a hung server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient, models

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import (
    META_POINT_ID,
    ScoredDoc,
    StoreMeta,
    StoreUnavailableError,
    VectorStore,
    point_id,
)
from prime_retriever.stores.edge import EdgeStore, to_edge_filter
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


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return load_corpus()


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


@pytest.fixture
async def local_store(corpus: Corpus) -> AsyncIterator[QdrantStore]:
    store = QdrantStore("docs", location=":memory:", upsert_batch_size=64)
    await load(store, corpus)
    yield store
    await store.close()


@pytest.fixture
async def edge_store(corpus: Corpus, tmp_path: Path) -> AsyncIterator[EdgeStore]:
    store = EdgeStore(tmp_path / "shard", upsert_batch_size=64)
    await load(store, corpus)
    await store.optimize()
    yield store
    await store.close()


@pytest.fixture(params=["local", "edge"])
async def store(request: pytest.FixtureRequest, corpus: Corpus, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s: VectorStore
    if request.param == "local":
        s = QdrantStore("docs", location=":memory:", upsert_batch_size=64)
    else:
        s = EdgeStore(tmp_path / "shard", upsert_batch_size=64)
    await load(s, corpus)
    if isinstance(s, EdgeStore):
        await s.optimize()
    yield s
    await s.close()


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


async def test_edge_hnsw_index_agrees_with_exact(local_store: QdrantStore, corpus: Corpus, tmp_path: Path) -> None:
    """Force a real HNSW graph on the small corpus; its top-k must match exact search (recall >= 0.95)."""
    store = EdgeStore(
        tmp_path / "hnsw",
        hnsw_ef=128,
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=128, full_scan_threshold=1),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=1),
    )
    async with store:
        await load(store, corpus)
        assert await store.optimize(in_subprocess=False) is True
        info = await store._run("info", store._require()[0].info)  # white-box: the graph was built
        assert info.indexed_vectors_count >= len(corpus.ids)
        found = total = 0
        for q in corpus.queries:
            want = {h.doc_id for h in await local_store.search(q, K)}
            got = {h.doc_id for h in await store.search(q, K)}
            found += len(want & got)
            total += K
        assert found / total >= 0.95


# -- encoder metadata ----------------------------------------------------------------------------------


async def test_local_encoder_mismatch_raises(corpus: Corpus) -> None:
    client = AsyncQdrantClient(location=":memory:")
    first = QdrantStore("docs", client=client)
    await first.ensure_collection(corpus.dim, corpus.encoder_name)
    await first.ensure_collection(corpus.dim, corpus.encoder_name)  # same encoder: fine, idempotent
    with pytest.raises(StoreError) as err:
        await QdrantStore("docs", client=client).ensure_collection(768, "bge-base")
    msg = str(err.value)
    assert corpus.encoder_name in msg and "bge-base" in msg and str(corpus.dim) in msg and "768" in msg
    with pytest.raises(StoreError, match="other-encoder"):
        await QdrantStore("docs", client=client).ensure_collection(corpus.dim, "other-encoder")
    await first.close()
    assert await client.collection_exists("docs")  # a passed-in client is not closed by the store
    # A collection not made by prime_retriever has no metadata point: if it holds points, refuse it
    await client.create_collection(
        "foreign", vectors_config=models.VectorParams(size=corpus.dim, distance=models.Distance.COSINE)
    )
    await client.upsert("foreign", points=[models.PointStruct(id=1, vector=corpus.vectors[0].tolist())])
    foreign = QdrantStore("foreign", client=client)
    foreign.metadata_wait_s = 0.3
    with pytest.raises(StoreError, match="metadata"):
        await foreign.ensure_collection(corpus.dim, corpus.encoder_name)
    # an empty one of another dimension or distance is refused too
    for name, params in (("d", models.VectorParams(size=corpus.dim + 1, distance=models.Distance.COSINE)),
                         ("e", models.VectorParams(size=corpus.dim, distance=models.Distance.EUCLID))):
        await client.create_collection(name, vectors_config=params)
        other = QdrantStore(name, client=client)
        other.metadata_wait_s = 0.1
        with pytest.raises(StoreError, match="metadata"):
            await other.ensure_collection(corpus.dim, corpus.encoder_name)
    await client.close()


async def test_an_empty_collection_whose_metadata_was_never_written_is_adopted(corpus: Corpus) -> None:
    """A creation cut off after create_collection (a dropped connection before the metadata upsert)
    leaves an empty collection with no metadata: the next ensure_collection adopts it instead of
    refusing that collection forever."""
    client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        "cut", vectors_config=models.VectorParams(size=corpus.dim, distance=models.Distance.COSINE)
    )
    store = QdrantStore("cut", client=client)
    store.metadata_wait_s = 0.1
    await store.ensure_collection(corpus.dim, corpus.encoder_name)
    await store.upsert(corpus.ids[:3], corpus.vectors[:3], [{}, {}, {}])
    assert await store.count() == 3
    with pytest.raises(StoreError, match="other-encoder"):  # it now records who built it
        await QdrantStore("cut", client=client).ensure_collection(corpus.dim, "other-encoder")
    await client.close()


async def test_an_empty_edge_shard_without_metadata_is_started_over(corpus: Corpus, tmp_path: Path) -> None:
    import qdrant_edge as qe

    path = tmp_path / "shard"
    config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=corpus.dim, distance=qe.Distance.Cosine))
    qe.EdgeShard.create(str(path), config).close()  # created, then cut off before its metadata
    async with EdgeStore(path) as s:
        await load(s, corpus)
        assert await s.count() == len(corpus.ids)
    shard = qe.EdgeShard.create(str(tmp_path / "full"), config)  # a shard with points but no metadata
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(id=1, vector=corpus.vectors[0].tolist(), payload={})]))
    shard.flush()
    shard.close()
    with pytest.raises(StoreError, match="no prime_retriever metadata point"):
        async with EdgeStore(tmp_path / "full") as s:
            await s.ensure_collection(corpus.dim, corpus.encoder_name)


async def test_a_collection_another_process_is_creating_is_awaited(corpus: Corpus) -> None:
    """Process A has created the collection but not yet written its metadata point: B waits for it
    (a short while) instead of calling the collection foreign."""
    client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        "racing", vectors_config=models.VectorParams(size=corpus.dim, distance=models.Distance.COSINE)
    )
    b = QdrantStore("racing", client=client)
    waiting = asyncio.create_task(b.ensure_collection(corpus.dim, corpus.encoder_name))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    marker = np.zeros(corpus.dim, np.float32)
    marker[0] = 1.0
    meta = StoreMeta(encoder_name=corpus.encoder_name, dim=corpus.dim).to_payload()
    await client.upsert("racing", points=[models.PointStruct(id=META_POINT_ID, vector=marker.tolist(), payload=meta)])
    await asyncio.wait_for(waiting, 5.0)  # A's metadata arrived: B accepts the collection
    await b.upsert(corpus.ids[:2], corpus.vectors[:2], [{}, {}])
    assert await b.count() == 2
    await client.close()


async def test_a_local_folder_held_by_another_client_raises_store_error(tmp_path: Path) -> None:
    first = QdrantStore(path=str(tmp_path / "db"))
    with pytest.raises(StoreError, match="already accessed"):
        QdrantStore(path=str(tmp_path / "db"))
    await first.close()
    second = QdrantStore(path=str(tmp_path / "db"))  # released on close
    await second.close()


async def test_edge_encoder_mismatch_raises(corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "shard"
    async with EdgeStore(path) as s:
        await load(s, corpus)
    with pytest.raises(StoreError) as err:
        async with EdgeStore(path) as s:
            await s.ensure_collection(768, "bge-base")
    msg = str(err.value)
    assert corpus.encoder_name in msg and "bge-base" in msg and "768" in msg and str(corpus.dim) in msg


# -- edge specifics ------------------------------------------------------------------------------------


async def test_edge_persists_across_reopen(corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "shard"
    async with EdgeStore(path) as s:
        await load(s, corpus)
        before = [await s.search(q, K) for q in corpus.queries[:5]]
    # no optimize(), no explicit flush: close() must persist
    async with EdgeStore(path) as s:
        await s.ensure_collection(corpus.dim, corpus.encoder_name)
        assert await s.count() == len(corpus.ids)
        assert await s.existing_ids(corpus.ids[:10]) == set(corpus.ids[:10])
        after = [await s.search(q, K) for q in corpus.queries[:5]]
        await s.optimize()
        optimized = [await s.search(q, K) for q in corpus.queries[:5]]
    for x, y, z in zip(before, after, optimized, strict=True):
        assert [h.doc_id for h in x] == [h.doc_id for h in y]
        assert_same_ranking(x, z)


def random_unit_vectors(n: int, d: int, seed: int) -> npt.NDArray[np.float32]:
    """``n`` random unit vectors of dimension ``d`` (n × d float32): a corpus large enough for a slow HNSW build."""
    vecs = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)  # n × d
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


async def test_edge_blocking_calls_do_not_block_the_loop(tmp_path: Path) -> None:
    """A ticker task keeps ticking during a large upsert and an HNSW build.

    qdrant-edge-py 0.9.0 holds the GIL inside engine calls, so this checks the store's remedies:
    short update batches, and optimize() in a child process.
    """
    n, d = 8_000, 64
    vecs = random_unit_vectors(n, d, seed=0)  # (n, d)
    ids = [f"doc-{i}" for i in range(n)]
    store = EdgeStore(tmp_path / "big", optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1))
    await store.ensure_collection(d, "random")
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.002)
            ticks += 1

    async def ticks_during(coro_fn: Callable[[], Awaitable[object]]) -> int:
        nonlocal ticks
        ticks = 0
        stop.clear()
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # let the ticker start
        await coro_fn()
        stop.set()
        await task
        return ticks

    upsert_ticks = await ticks_during(functools.partial(store.upsert, ids, vecs, [{}] * n))
    optimize_ticks = await ticks_during(functools.partial(store.optimize))
    assert await store.count() == n
    assert [h.doc_id for h in await store.search(vecs[7], 1)] == ["doc-7"]
    await store.close()
    # A call that stalled the loop would let the ticker run at most once.
    assert upsert_ticks >= 5
    assert optimize_ticks >= 5


async def test_cancelled_edge_optimize_kills_its_child_and_reopens_the_shard(tmp_path: Path) -> None:
    """A cancelled optimize() (a timeout, Ctrl-C) must not leave its child process writing the shard
    while the store reopens it: the child is killed and reaped, and the store still serves."""
    n, d = 8_000, 64
    vecs = random_unit_vectors(n, d, seed=1)  # (n, d)
    store = EdgeStore(tmp_path / "big", optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1))
    await store.ensure_collection(d, "random")
    await store.upsert([f"doc-{i}" for i in range(n)], vecs, [{}] * n)
    task = asyncio.create_task(store.optimize())
    while store.optimize_pid is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the child is starting or building the index
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(store.optimize_pid, 0)  # killed and reaped
    assert await store.count() == n
    assert [h.doc_id for h in await store.search(vecs[7], 1)] == ["doc-7"]
    assert await store.optimize() in (True, False)  # a later optimize works on the reopened shard
    await store.close()


async def test_edge_open_cancelled_midway_leaves_no_second_handle(corpus: Corpus, tmp_path: Path) -> None:
    """ensure_collection cancelled while the worker thread loads the shard (a timeout): the shard it
    loaded anyway is closed by the next open, or by close(); concurrent opens share one shard."""
    path = tmp_path / "s"
    async with EdgeStore(path) as s:
        await load(s, corpus)
    for then in ("reopen", "close"):
        store = EdgeStore(path)
        task = asyncio.create_task(store.ensure_collection(corpus.dim, corpus.encoder_name))
        await asyncio.sleep(0)  # the load is on the worker thread now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if then == "reopen":
            await asyncio.gather(*(store.ensure_collection(corpus.dim, corpus.encoder_name) for _ in range(3)))
            assert store._orphan is None
            assert await store.count() == len(corpus.ids)
        await store.close()
        assert store._orphan is None
    async with EdgeStore(path) as s:
        await s.ensure_collection(corpus.dim, corpus.encoder_name)
        assert await s.count() == len(corpus.ids)


def test_edge_filter_translation() -> None:
    f = models.Filter(
        must=[models.FieldCondition(key="a", match=models.MatchValue(value="x"))],
        should=[models.HasIdCondition(has_id=[point_id("d")])],
        must_not=[
            models.Filter(must=[models.FieldCondition(key="b", match=models.MatchAny(any=["y", "z"]))]),
            models.FieldCondition(key="c", match=models.MatchExcept(**{"except": [1, 2]})),
        ],
    )
    assert isinstance(to_edge_filter(f), qe.Filter)
    with pytest.raises(StoreError, match="unsupported"):
        to_edge_filter(models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=1))]))
    with pytest.raises(StoreError, match="unsupported"):
        to_edge_filter(models.Filter(must=[models.FieldCondition(key="t", match=models.MatchText(text="x"))]))


async def test_edge_unsupported_filter_raises(edge_store: EdgeStore, corpus: Corpus) -> None:
    rng = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=1))])
    with pytest.raises(StoreError, match="qdrant-edge"):
        await edge_store.search(corpus.queries[0], K, filter=rng)


# -- unreachable / hanging server -----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers (a hung server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not done.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    done.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def test_grpc_and_rate_limit_errors_are_classified_by_their_code() -> None:
    """A gRPC status that means "not now" (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) is retryable; one
    that is the request's own fault (INVALID_ARGUMENT, NOT_FOUND, ...) is permanent; the client's
    rate-limit answer (HTTP 429 / gRPC with Retry-After) is retryable."""
    import grpc as grpc_mod
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse

    from prime_retriever.stores.qdrant import _translate

    def rpc(code: grpc_mod.StatusCode) -> grpc_mod.aio.AioRpcError:
        return grpc_mod.aio.AioRpcError(code, grpc_mod.aio.Metadata(), grpc_mod.aio.Metadata(), details="detail")

    for code in (grpc_mod.StatusCode.UNAVAILABLE, grpc_mod.StatusCode.DEADLINE_EXCEEDED,
                 grpc_mod.StatusCode.RESOURCE_EXHAUSTED):
        assert isinstance(_translate(rpc(code), "s", "search"), StoreUnavailableError), code
    for code in (grpc_mod.StatusCode.INVALID_ARGUMENT, grpc_mod.StatusCode.NOT_FOUND,
                 grpc_mod.StatusCode.ALREADY_EXISTS, grpc_mod.StatusCode.PERMISSION_DENIED):
        err = _translate(rpc(code), "s", "search")
        assert type(err) is StoreError and code.name in str(err), code
    limited = _translate(ResourceExhaustedResponse("slow down", 3), "s", "search")
    assert isinstance(limited, StoreUnavailableError) and "retry after 3 s" in str(limited)


@pytest.mark.parametrize("grpc", [False, True])
async def test_unreachable_server_raises_unavailable(grpc: bool) -> None:
    port = _closed_port()
    store = QdrantStore(url=f"http://127.0.0.1:{port}", timeout=1, prefer_grpc=grpc, grpc_port=port)
    assert store.name.startswith("qdrant-server(http://127.0.0.1:")
    with pytest.raises(StoreUnavailableError, match="qdrant-server"):
        await store.ensure_collection(384, "x")
    await store.close()


async def test_hanging_server_times_out_as_unavailable(silent_server: int) -> None:
    store = QdrantStore(url=f"http://127.0.0.1:{silent_server}", timeout=1)
    with pytest.raises(StoreUnavailableError):
        await store.ensure_collection(384, "x")
    await store.close()


def test_ties_rank_by_doc_id() -> None:
    from prime_retriever.stores.base import ScoredDoc, ranked

    docs = [ScoredDoc("b", 0.5, {}), ScoredDoc("c", 0.9, {}), ScoredDoc("a", 0.5, {})]
    assert [d.doc_id for d in ranked(docs)] == ["c", "a", "b"]
