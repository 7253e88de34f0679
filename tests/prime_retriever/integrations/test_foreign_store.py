"""The read-only store over a foreign collection, on Qdrant local mode (sync and async clients)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from prime_retriever import StoreError, StoreUnavailableError
from prime_retriever.integrations.foreign_store import ForeignCollectionError, ForeignQdrantStore
from prime_retriever.integrations.payload_schema import PayloadSchema, langchain_schema, llama_index_schema
from prime_retriever.stores.base import point_id

DIM = 8
RNG = np.random.default_rng(0)
VECTORS = RNG.normal(size=(6, DIM)).astype(np.float32)  # 6 × D
IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc{i}")) for i in range(6)]


def _points(named: str | None) -> list[models.PointStruct]:
    return [
        models.PointStruct(
            id=IDS[i], vector={named: VECTORS[i].tolist()} if named else VECTORS[i].tolist(),
            payload={"page_content": f"Title {i}: text {i}", "metadata": {"title": f"Title {i}", "group": i % 2}},
        )
        for i in range(6)
    ]


def _fill(client: QdrantClient, name: str, named: str | None, distance: models.Distance = models.Distance.COSINE,
          dim: int = DIM) -> None:
    params = models.VectorParams(size=dim, distance=distance)
    client.create_collection(name, vectors_config={named: params} if named else params)
    if dim == DIM:
        client.upsert(name, points=_points(named))


@pytest.fixture
async def store() -> AsyncIterator[ForeignQdrantStore]:
    client = QdrantClient(location=":memory:")
    _fill(client, "lc", None)
    s = ForeignQdrantStore(client, "lc", langchain_schema())
    await s.ensure_collection(DIM, "enc")
    yield s
    await s.close()


def _nearest(q: np.ndarray, skip: set[int] = frozenset()) -> list[str]:  # type: ignore[assignment]
    unit = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
    order = np.argsort(-(unit @ (q / np.linalg.norm(q))))
    return [IDS[i] for i in order if i not in skip]


async def test_search_is_exact_cosine_and_honours_excludes(store: ForeignQdrantStore) -> None:
    q = VECTORS[0] + 0.1
    hits = await store.search(q, 3)
    assert [h.doc_id for h in hits] == _nearest(q)[:3]
    assert hits[0].payload["metadata"]["title"].startswith("Title")  # the framework's payload, as written
    hits = await store.search(q, 3, exclude_ids=[hits[0].doc_id])
    assert [h.doc_id for h in hits] == [d for d in _nearest(q) if d != _nearest(q)[0]][:3]
    (a, b) = await store.search_batch(np.stack([q, VECTORS[1]]), 2)
    assert a[0].doc_id == _nearest(q)[0] and b[0].doc_id == IDS[1]


async def test_filters_and_prime_id_conditions_are_rewritten(store: ForeignQdrantStore) -> None:
    group = models.Filter(must=[models.FieldCondition(key="metadata.group", match=models.MatchValue(value=1))])
    hits = await store.search(VECTORS[0], 6, filter=group)
    assert {h.doc_id for h in hits} == {IDS[1], IDS[3], IDS[5]}
    await store.documents()  # every doc id seen: a retriever's HasIdCondition on prime's ids is translated
    only = models.Filter(must=[group, models.HasIdCondition(has_id=[point_id(IDS[3]), point_id(IDS[4])])])
    assert [h.doc_id for h in await store.search(VECTORS[0], 6, filter=only)] == [IDS[3]]
    nested = models.Filter(should=[only], must_not=models.HasIdCondition(has_id=[point_id(IDS[1])]))
    assert [h.doc_id for h in await store.search(VECTORS[0], 6, filter=nested)] == [IDS[3]]
    with pytest.raises(StoreError, match="Filter"):
        await store.search(VECTORS[0], 2, filter={"metadata.group": 1})  # type: ignore[arg-type]


async def test_lookups_count_and_documents(store: ForeignQdrantStore) -> None:
    assert await store.count() == 6
    vecs = await store.get_vectors([IDS[2], IDS[2], str(uuid.uuid4())])
    assert list(vecs) == [IDS[2]]
    np.testing.assert_allclose(vecs[IDS[2]], VECTORS[2] / np.linalg.norm(VECTORS[2]), atol=1e-6)
    assert await store.existing_ids([IDS[0], str(uuid.uuid4())]) == {IDS[0]}
    docs = await store.documents()
    assert sorted(d.id for d in docs) == sorted(IDS)
    assert {d.text for d in docs} == {f"text {i}" for i in range(6)}  # the page's "title: " prefix is not text


async def test_nothing_is_ever_written(store: ForeignQdrantStore) -> None:
    with pytest.raises(ForeignCollectionError, match="read-only"):
        await store.upsert([IDS[0]], VECTORS[:1], [{}])
    assert await store.count() == 6
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.search(VECTORS[0], 1)


async def test_named_vectors_through_an_async_client() -> None:
    sync = QdrantClient(location=":memory:")
    _fill(sync, "li", "text-dense")
    aclient = AsyncQdrantClient(location=":memory:")
    await aclient.create_collection("li", vectors_config={"text-dense": models.VectorParams(
        size=DIM, distance=models.Distance.COSINE)})
    await aclient.upsert("li", points=_points("text-dense"))
    for client in (sync, aclient):
        s = ForeignQdrantStore(client, "li", llama_index_schema())
        await s.ensure_collection(DIM, "enc")
        assert (await s.search(VECTORS[4], 1))[0].doc_id == IDS[4]
        assert IDS[4] in await s.get_vectors([IDS[4]])
    with pytest.raises(ForeignCollectionError, match="text-dense"):
        await ForeignQdrantStore(sync, "li", langchain_schema()).ensure_collection(DIM, "enc")


@pytest.mark.parametrize(("layout", "message"), [
    ({"named": None, "dim": 4}, "4-d"),
    ({"named": None, "distance": models.Distance.DOT}, "cosine"),
])
async def test_a_collection_that_cannot_serve_is_refused(layout: dict[str, object], message: str) -> None:
    client = QdrantClient(location=":memory:")
    _fill(client, "c", **layout)  # type: ignore[arg-type]
    with pytest.raises(ForeignCollectionError, match=message):
        await ForeignQdrantStore(client, "c", langchain_schema()).ensure_collection(DIM, "enc")
    with pytest.raises(ForeignCollectionError, match="never created"):
        await ForeignQdrantStore(client, "missing", langchain_schema()).ensure_collection(DIM, "enc")
    with pytest.raises(StoreError, match="ensure_collection"):
        await ForeignQdrantStore(client, "c", langchain_schema()).search(VECTORS[0], 1)


async def test_an_unreachable_server_is_retryable() -> None:
    client = AsyncQdrantClient(url="http://127.0.0.1:9", timeout=1, check_compatibility=False)  # nothing listens
    with pytest.raises(StoreUnavailableError):
        await ForeignQdrantStore(client, "c", langchain_schema()).ensure_collection(DIM, "enc")


async def test_integer_point_ids() -> None:
    client = QdrantClient(location=":memory:")
    client.create_collection("ints", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.upsert("ints", points=[models.PointStruct(id=7, vector=VECTORS[0].tolist(), payload={})])
    s = ForeignQdrantStore(client, "ints", PayloadSchema("plain", None, ("title",), ("text",)))
    await s.ensure_collection(DIM, "enc")
    assert (await s.search(VECTORS[0], 1))[0].doc_id == "7"
    assert list(await s.get_vectors(["7"])) == ["7"]
    assert await s.search(VECTORS[0], 1, exclude_ids=["7"]) == []
