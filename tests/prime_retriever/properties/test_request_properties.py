"""Property-based tests of the entry points' input validation: search, search_baseline, prepare, predict_vector.

For arbitrary contexts and queries (shapes, dtypes, values, nesting, Unicode), a call either raises a
typed error of this package (:class:`~prime_retriever.errors.PrimeError`) or returns a well-formed
result; never another exception, never a hang (each call has a timeout), and never a poisoned
batch: a good search sent concurrently with each arbitrary one gets exactly its reference hits.

Real components, shared by the module: MiniLM, a Qdrant local-mode store of a few documents and a
small eager predictor; Hypothesis runs on one event loop that the retriever lives on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prime_retriever.errors import PrimeError
from prime_retriever.retrieval.results import SearchResult
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.text.documents import Document
from tests.prime_retriever.retrieval.test_retriever import shared_encoder, small_predictor

DIM = 384
EXAMPLES = 60
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CALL_TIMEOUT_S = 60.0  # a hang fails the property; a real search takes milliseconds
DOCS = [Document(id=f"d{i}", title=f"Topic {i}", text=f"Topic {i} is a paragraph about subject number {i}.")
        for i in range(12)]
GOOD_CONTEXT = ["user: tell me about topic 3"]
GOOD_QUERY = "what is subject number 3?"

# any code point, surrogates included (Hypothesis leaves them out by default)
any_char = st.characters(codec=None, exclude_categories=())
texts = st.text(alphabet=any_char, max_size=40)
dtypes = st.sampled_from([np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int64, np.uint8, np.bool_,
                          np.complex64, np.complex128, np.str_, np.object_])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = draw(dtypes)
    dims = draw(st.sampled_from([(DIM,), (1, DIM), (2, DIM), (0, DIM), (DIM + 1,), (3,), (), (1, 2, DIM), (0,)]))
    if dtype in (np.str_, np.object_):
        return np.full(dims, draw(st.sampled_from(["0.5", "x", 1.0, None])), dtype=dtype)
    values = st.floats(allow_nan=True, allow_infinity=True, width=64) if np.dtype(dtype).kind in "fc" else None
    arr = draw(hnp.arrays(np.float64 if values is not None else dtype, dims, elements=values))
    if np.dtype(dtype).kind in "fc":
        with np.errstate(over="ignore", invalid="ignore"):
            arr = (arr * draw(st.sampled_from([1.0, 1e-30, 1e30, 1e300]))).astype(dtype)
    return arr


leaves = st.one_of(texts, arrays(), st.none(), st.integers(), st.floats(), st.binary(max_size=8))
nested = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner), max_leaves=6)
contexts = st.one_of(texts, st.lists(texts, max_size=4), arrays(), st.lists(arrays(), max_size=3), nested)
queries = st.one_of(texts, arrays(), nested)
ks = st.one_of(st.integers(min_value=-2, max_value=3), st.just(10**9), st.floats(), st.none(), st.text(max_size=2))


class World:
    """One event loop, one retriever on it, and the reference hits of the good search."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.retriever = self.loop.run_until_complete(self._build())
        self.reference = self.run(self.retriever.search(GOOD_CONTEXT, GOOD_QUERY, k=3))

    async def _build(self) -> PredictiveRetriever:
        enc = shared_encoder()
        store = QdrantStore("props", location=":memory:")
        await store.ensure_collection(enc.dim, enc.name)
        vecs = enc.encode([d.encoding_text for d in DOCS], batch_size=16, show_progress=False)
        await store.upsert([d.id for d in DOCS], vecs, [d.payload() for d in DOCS])
        return PredictiveRetriever(small_predictor(), enc, store, batch_wait_s=0.01)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, CALL_TIMEOUT_S))

    def check_with_company(self, call: Any) -> Any:
        """Run ``call`` beside a good search (same micro-batch window); the good one must be unharmed."""
        async def both() -> tuple[Any, Any]:
            got = await asyncio.gather(call, self.retriever.search(GOOD_CONTEXT, GOOD_QUERY, k=3),
                                       return_exceptions=True)
            return got[0], got[1]

        out, good = self.run(both())
        assert isinstance(good, SearchResult), good
        assert [h.doc_id for h in good] == [h.doc_id for h in self.reference]
        if isinstance(out, BaseException) and not isinstance(out, PrimeError):
            raise out
        return out

    def close(self) -> None:
        self.run(self.retriever.close())
        self.loop.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def _well_formed(res: Any, k: int) -> None:
    assert isinstance(res, SearchResult)
    assert len(res) <= k and all(np.isfinite(h.score) for h in res)
    assert 0.0 <= res.confidence <= 1.0


def _unit(vec: Any) -> None:
    assert isinstance(vec, np.ndarray) and vec.shape == (DIM,) and vec.dtype == np.float32
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3


@SETTINGS
@given(context=contexts, query=queries, k=ks)
def test_search_gives_a_typed_error_or_hits_and_never_poisons_its_batch(world: World, context: Any, query: Any,
                                                                        k: Any) -> None:
    try:
        call = world.retriever.search(context, query, k=k)
    except PrimeError:
        return
    out = world.check_with_company(call)
    if not isinstance(out, BaseException):
        _well_formed(out, int(k))


@SETTINGS
@given(query=queries, k=ks)
def test_search_baseline_gives_a_typed_error_or_hits(world: World, query: Any, k: Any) -> None:
    out = world.check_with_company(world.retriever.search_baseline(query, k=k))
    if not isinstance(out, BaseException):
        _well_formed(out, int(k))


@SETTINGS
@given(session=st.one_of(texts, st.none(), st.integers()), context=contexts, query=st.one_of(st.none(), queries))
def test_prepare_gives_a_typed_error_or_hits(world: World, session: Any, context: Any, query: Any) -> None:
    out = world.check_with_company(world.retriever.prepare(session, context, query=query))
    if not isinstance(out, BaseException):
        _well_formed(out, world.retriever.prepare_k)


@SETTINGS
@given(context=contexts, query=queries)
def test_predict_vector_gives_a_typed_error_or_a_unit_vector(world: World, context: Any, query: Any) -> None:
    out = world.check_with_company(world.retriever.predict_vector(context, query))
    if not isinstance(out, BaseException):
        _unit(out)


@SETTINGS
@given(scale=st.floats(min_value=1e-300, max_value=1e300), seed=st.integers(0, 2**16))
def test_any_finite_scale_of_a_query_vector_gives_the_unit_vectors_hits(world: World, scale: float,
                                                                        seed: int) -> None:
    q = np.random.default_rng(seed).normal(size=DIM)  # (D,) float64: scaled before any float32 rounding
    unit = world.run(world.retriever.search_baseline((q / np.linalg.norm(q)).astype(np.float32), k=3))
    try:
        scaled = world.run(world.retriever.search_baseline(q * scale, k=3))
    except PrimeError:  # only an all-zero or non-finite vector may be refused; a finite non-zero one is not
        assert not np.isfinite(q * scale).all() or not (q * scale).any()
        return
    assert [h.doc_id for h in scaled] == [h.doc_id for h in unit]
