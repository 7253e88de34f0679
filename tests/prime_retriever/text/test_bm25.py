"""Bm25Encoder (Qdrant Edge's BM25 model) and SparseVector: what the sparse half of hybrid search is made of."""

from __future__ import annotations

import pytest

from prime_retriever.errors import EncoderError
from prime_retriever.text.bm25 import Bm25Encoder, SparseVector


@pytest.fixture(scope="module")
def bm25() -> Bm25Encoder:
    return Bm25Encoder()


def test_a_query_weighs_each_distinct_stem_once(bm25: Bm25Encoder) -> None:
    q = bm25.embed_query("Running runners run; the RUNNING dog")
    assert set(q.values) == {1.0}
    assert len(q.indices) == len(set(q.indices))
    assert set(bm25.embed_query("run dog").indices) == set(bm25.embed_query("dog run").indices)
    assert set(bm25.embed_query("runs").indices) == set(bm25.embed_query("running").indices)  # stemmed
    assert bm25.embed_query("the of and").indices == ()  # stop words only


def test_document_weights_saturate_and_normalise_by_length(bm25: Bm25Encoder) -> None:
    one, three = bm25.embed_documents(["cat", "cat cat cat"])
    assert one.indices == three.indices
    assert three.values[0] > one.values[0]  # more occurrences weigh more,
    assert three.values[0] < 3 * one.values[0]  # but saturate (k1 = 1.2)
    short, long = bm25.embed_documents(["cat", "cat " + " ".join(f"word{i}" for i in range(300))])
    idx = long.indices.index(short.indices[0])
    assert long.values[idx] < short.values[0]  # a longer document weighs each term less (b = 0.75)
    assert bm25.embed_documents([""]) == [SparseVector((), ())]


def test_bad_input_is_a_typed_error(bm25: Bm25Encoder) -> None:
    with pytest.raises(EncoderError, match="surrogates"):
        bm25.embed_query("bad \udc80 text")
    with pytest.raises(EncoderError, match="not a single str"):
        bm25.embed_documents("a text")  # a str is a Sequence[str] to mypy: only the runtime check catches it
    with pytest.raises(EncoderError, match="not str"):
        bm25.embed_documents([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(EncoderError, match="BM25"):
        Bm25Encoder(language="klingon")


@pytest.mark.parametrize(("indices", "values", "match"), [
    ((1, 2), (1.0,), "2 indices but 1 values"),
    ((1, 1), (1.0, 2.0), "repeated"),
    ((-1,), (1.0,), r"\[0, 2\*\*32\)"),
    ((True,), (1.0,), r"\[0, 2\*\*32\)"),
    ((1,), (float("nan"),), "finite"),
])
def test_sparse_vector_checks_itself(indices: tuple[int, ...], values: tuple[float, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SparseVector(indices, values)
