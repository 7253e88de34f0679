"""The PREPARE-state predictive cache: unit tests (injected clock) and the retriever integration."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from prime_retriever.retrieval.predictive_cache import PredictiveCache
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import ScoredDoc
from tests.prime_retriever.retrieval.test_retriever import (
    assert_same_hits,
    embedding_cache_dir,
    hotpot_sample,
    populated_store,
    shared_encoder,
    small_predictor,
)

D = 16


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unit(seed: int) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).standard_normal(D).astype(np.float32)
    return v / np.linalg.norm(v)


def docs(n: int, prefix: str = "d") -> list[ScoredDoc]:
    return [ScoredDoc(f"{prefix}{i}", 1.0 - i / 100, {"doc_id": f"{prefix}{i}"}) for i in range(n)]


def near(v: npt.NDArray[np.float32], cos: float, seed: int = 99) -> npt.NDArray[np.float32]:
    """A unit vector at cosine ``cos`` from unit ``v``."""
    r = unit(seed)
    r = r - (r @ v) * v
    r /= np.linalg.norm(r)
    out: npt.NDArray[np.float32] = (cos * v + np.sqrt(1 - cos**2) * r).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------- unit


def test_hit_when_prediction_is_close_and_miss_when_not() -> None:
    cache = PredictiveCache(max_size=10, ttl_s=60, threshold=0.9, clock=FakeClock())
    v = unit(0)
    cache.put("s1", v, docs(10), k=10)
    hits = cache.lookup("s1", near(v, 0.95), k=5)
    assert hits is not None and [h.doc_id for h in hits] == [f"d{i}" for i in range(5)]
    assert cache.lookup("s1", near(v, 0.85), k=5) is None
    assert cache.lookup("unknown", v, k=5) is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)
    assert cache.stats.hit_rate == pytest.approx(1 / 3)


def test_more_hits_than_prepared_is_a_miss_unless_the_collection_was_exhausted() -> None:
    cache = PredictiveCache(clock=FakeClock())
    v = unit(1)
    cache.put("s", v, docs(5), k=5)
    assert cache.lookup("s", v, k=6) is None
    cache.put("small", v, docs(3), k=10)  # only 3 documents matched: all of them
    hits = cache.lookup("small", v, k=6)
    assert hits is not None and len(hits) == 3


def test_filter_and_exclusions_must_be_compatible() -> None:
    cache = PredictiveCache(clock=FakeClock())
    v = unit(2)
    cache.put("s", v, docs(10), k=10, exclude_ids=["x"])
    assert cache.lookup("s", v, k=5, filter={"title": "a"}) is None  # another filter
    assert cache.lookup("s", v, k=5) is None  # "x" was excluded at prepare time, not now
    hits = cache.lookup("s", v, k=5, exclude_ids=["x", "d0", "d3"])  # a superset: drop d0, d3
    assert hits is not None and [h.doc_id for h in hits] == ["d1", "d2", "d4", "d5", "d6"]


def test_ttl_expiry_with_injected_clock() -> None:
    clock = FakeClock()
    cache = PredictiveCache(ttl_s=30, clock=clock)
    v = unit(3)
    cache.put("s", v, docs(5), k=5)
    clock.now += 29
    assert cache.lookup("s", v, k=5) is not None
    clock.now += 2
    assert cache.lookup("s", v, k=5) is None
    assert "s" not in cache and cache.stats.expired == 1
    cache.put("a", v, docs(1), k=1)
    cache.put("b", v, docs(1), k=1)
    clock.now += 31
    assert cache.purge_expired() == 2 and len(cache) == 0


def test_lru_eviction() -> None:
    cache = PredictiveCache(max_size=3, clock=FakeClock())
    for s in "abc":
        cache.put(s, unit(4), docs(2), k=2)
    assert cache.get("a") is not None  # "a" becomes the most recently used
    cache.put("d", unit(4), docs(2), k=2)
    assert "b" not in cache and {"a", "c", "d"} <= {s for s in "abcd" if s in cache}
    assert len(cache) == 3 and cache.stats.evicted == 1


def test_memory_stays_bounded_over_100k_sessions() -> None:
    cache = PredictiveCache(max_size=1000, ttl_s=None, clock=FakeClock())
    hits = docs(5)
    v = unit(5)
    for i in range(100_000):
        cache.put(f"session-{i}", v, hits, k=5)
        if i % 1000 == 0:
            assert len(cache) <= 1000
    assert len(cache) == 1000 and cache.stats.evicted == 99_000
    # 20k more sessions under tracemalloc: replacing entries does not accumulate memory
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(20_000):
        cache.put(f"more-{i}", v, hits, k=5)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(cache) == 1000
    assert after - before < 1_000_000


def test_latency_saved_estimate() -> None:
    cache = PredictiveCache(clock=FakeClock())
    assert cache.stats.latency_saved_s == 0.0
    cache.record_latency(False, 0.010)
    cache.record_latency(False, 0.030)
    cache.stats.hits = 3
    assert cache.stats.latency_saved_s == pytest.approx(0.060)  # no hit measured: mean miss × hits
    cache.record_latency(True, 0.005)
    assert cache.stats.latency_saved_s == pytest.approx(0.045)  # (0.020 - 0.005) × 3
    assert set(cache.stats.as_dict()) >= {"hits", "misses", "hit_rate", "latency_saved_s"}


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        PredictiveCache(max_size=0)
    with pytest.raises(ValueError):
        PredictiveCache(ttl_s=0)
    with pytest.raises(ValueError):
        PredictiveCache(threshold=1.5)
    with pytest.raises(ValueError):
        PredictiveCache().put("s", np.zeros(D), [], k=1)


# ---------------------------------------------------------------------------------------- retriever


@pytest.fixture
def cache_root(pytestconfig: pytest.Config) -> Path:
    return embedding_cache_dir(pytestconfig)


async def test_prepare_then_search_is_served_from_cache(cache_root: Path) -> None:
    sample = hotpot_sample()
    q = sample.questions[0]
    ctx = [q, sample.docs[2].encoding_text]
    store = await populated_store(cache_root)
    cache = PredictiveCache(threshold=0.99)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store, cache=cache) as r:
        prepared = await r.prepare("s1", ctx, query=q)  # PREPARE knows the likely query
        assert len(prepared) == r.prepare_k and "s1" in cache
        fresh = await r.search(ctx, q, k=5)  # no session: a real search
        got = await r.search(ctx, q, k=5, session_id="s1")
        assert got.source == "cache" and all(h.source == "cache" for h in got) and len(got) == 5
        assert_same_hits(got, fresh)
        assert cache.stats.hits == 1 and cache.stats.misses == 0
        # asking for more than was prepared: searched, not served from the cache
        more = await r.search(ctx, q, k=r.prepare_k + 1, session_id="s1")
        assert more.source == "predicted" and len(more) == r.prepare_k + 1
        assert cache.stats.misses == 1


async def test_prepare_with_another_context_is_a_miss_and_results_are_still_right(cache_root: Path) -> None:
    sample = hotpot_sample()
    store = await populated_store(cache_root)
    cache = PredictiveCache(threshold=0.95)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store, cache=cache) as r:
        await r.prepare("s1", [sample.docs[50].encoding_text])  # about something else entirely
        q = sample.questions[3]
        got = await r.search([q], q, k=5, session_id="s1")
        fresh = await r.search([q], q, k=5)
        assert got.source == "predicted"
        assert_same_hits(got, fresh)
        assert (cache.stats.hits, cache.stats.misses) == (0, 1)
        assert cache.stats.mean_miss_latency_s is not None


async def test_sessions_never_share_cached_hits(cache_root: Path) -> None:
    sample = hotpot_sample()
    store = await populated_store(cache_root)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store) as r:
        qa, qb = sample.questions[0], sample.questions[5]
        await asyncio.gather(r.prepare("a", [qa], query=qa), r.prepare("b", [qb], query=qb))
        ra, rb = await asyncio.gather(r.search([qa], qa, k=5, session_id="a"), r.search([qb], qb, k=5, session_id="b"))
        assert ra.source == rb.source == "cache"
        assert_same_hits(ra, await r.search([qa], qa, k=5))
        assert_same_hits(rb, await r.search([qb], qb, k=5))


async def test_on_prepare_hook_from_loop_and_from_another_thread(cache_root: Path) -> None:
    sample = hotpot_sample()
    store = await populated_store(cache_root)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store) as r:
        await r.warmup()
        task = r.on_prepare("loop", [sample.questions[0]])
        assert isinstance(task, asyncio.Task)
        await task
        assert "loop" in r.cache
        box: list[object] = []

        def detector() -> None:  # a boundary detector on its own thread
            box.append(r.on_prepare("thread", [sample.questions[1]]))

        t = threading.Thread(target=detector)
        t.start()
        await asyncio.to_thread(t.join)
        fut = box[0]
        assert hasattr(fut, "result")
        await asyncio.wrap_future(fut)  # type: ignore[arg-type]
        assert "thread" in r.cache
        with pytest.raises(ValueError, match="empty context"):
            r.on_prepare("bad", [])
        # invalid arguments raise here, not later in the scheduled (quiet) prepare
        with pytest.raises(ValueError, match="session_id"):
            r.on_prepare(None, ["a"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="k must be"):
            r.on_prepare("bad", ["a"], k=0)
        with pytest.raises(TypeError, match="'kk'"):
            r.on_prepare("bad", ["a"], kk=3)
        assert "bad" not in r.cache
        # the scheduled prepare runs the request validated here: an iterator of ids is read once
        q = sample.questions[2]
        top = (await r.prepare("probe", [q]))[0].doc_id
        got = await r.on_prepare("gen", [q], exclude_ids=(x for x in [top]))  # type: ignore[misc]
        assert got is not None and len(got) > 0 and top not in [h.doc_id for h in got]
