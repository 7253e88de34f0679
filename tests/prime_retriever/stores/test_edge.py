"""What only ``EdgeStore`` (Qdrant Edge) does: its shard on disk (metadata, reopen, persistence), optimize()
and its child process, the HNSW index, and the translation of Qdrant filters to Edge filters.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import qdrant_edge as qe
from qdrant_client import models

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import point_id
from prime_retriever.stores.edge import EdgeStore, to_edge_filter
from prime_retriever.stores.qdrant import QdrantStore
from tests.prime_retriever.stores.test_contract import Corpus, K, assert_same_ranking, load

# -- encoder metadata ----------------------------------------------------------------------------------


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


# -- HNSW index vs exact search ------------------------------------------------------------------------


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
