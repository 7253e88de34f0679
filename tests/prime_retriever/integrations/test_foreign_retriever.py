"""A PredictiveRetriever over a foreign collection (its link graph read from the collection), driven
from sync and async code through a RetrieverThread: real MiniLM, Qdrant local mode."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from prime_retriever import Document, LinkGraph, PredictiveRetriever, RetrieverError, TextEncoder
from prime_retriever.backends.inference import EagerPredictor
from prime_retriever.integrations.foreign_retriever import (
    PredictorOptions,
    link_graph_from_store,
    open_foreign_retriever,
)
from prime_retriever.integrations.foreign_store import ForeignCollectionError, ForeignQdrantStore
from prime_retriever.integrations.payload_schema import langchain_schema
from prime_retriever.integrations.retriever_thread import RetrieverThread
from prime_retriever.model.random_predictor import random_predictor
from tests.prime_retriever.integrations.fixtures import DICE_CONTEXT as CONTEXT
from tests.prime_retriever.integrations.fixtures import DICE_DOCS

DOCS = [*DICE_DOCS, Document("tsr", "TSR was an American game publisher.", "TSR")]


def _store(encoder: TextEncoder, *, titles: bool = True, texts: bool = True) -> ForeignQdrantStore:
    """A LangChain-layout collection of DOCS ("title: text" pages, as LangChain users index them)."""
    client = QdrantClient(location=":memory:")
    client.create_collection("lc", vectors_config=models.VectorParams(size=encoder.dim,
                                                                        distance=models.Distance.COSINE))
    vecs = encoder.encode([d.encoding_text for d in DOCS], batch_size=8, show_progress=False)
    client.upsert("lc", points=[
        models.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, d.id)), vector=[float(x) for x in v], payload={
            "page_content": d.encoding_text if texts else "", "metadata": {"title": d.title} if titles else {}})
        for d, v in zip(DOCS, vecs, strict=True)])
    return ForeignQdrantStore(client, "lc", langchain_schema())


def _linked() -> EagerPredictor:
    return EagerPredictor(random_predictor(384, seed=0, perturb=0.05, link_candidates=2, max_context_length=6))


async def test_the_graph_is_read_from_the_collection(minilm: TextEncoder) -> None:
    graph = await link_graph_from_store(_store(minilm))
    ids = {d.id: str(uuid.uuid5(uuid.NAMESPACE_URL, d.id)) for d in DOCS}
    assert graph.links == {ids[k]: tuple(ids[x] for x in v) for k, v in LinkGraph.build(DOCS).links.items()}


async def test_missing_titles_or_texts(minilm: TextEncoder) -> None:
    with pytest.raises(ForeignCollectionError, match="title_key"):
        await link_graph_from_store(_store(minilm, titles=False))
    with pytest.warns(UserWarning, match="only titles the conversation mentions"):
        graph = await link_graph_from_store(_store(minilm, texts=False))
    assert graph.titles and not graph.links


async def test_expansion_follows_the_predictor_and_the_options(minilm: TextEncoder, tmp_path: Path) -> None:
    store = _store(minilm)
    rt = await open_foreign_retriever(store, encoder=minilm, backend=_linked())
    assert rt.expansion is not None and rt.expansion.max_candidates == 2
    assert (await rt.search(CONTEXT, "Who designed it?", k=2)).source == "predicted"
    await rt.close()
    path = (await link_graph_from_store(store)).save(tmp_path / "links.json")
    rt = await open_foreign_retriever(store, PredictorOptions(links=str(path)), encoder=minilm, backend=_linked())
    assert rt.expansion is not None and rt.expansion.graph.links == LinkGraph.load(path).links
    await rt.close()
    rt = await open_foreign_retriever(store, PredictorOptions(links="none"), encoder=minilm, backend=_linked())
    assert rt.expansion is None
    await rt.close()
    with pytest.warns(UserWarning, match="no checkpoint"):
        rt = await open_foreign_retriever(_store(minilm, titles=False), encoder=minilm)  # no expansion wanted
    assert rt.expansion is None and rt.prepare_k == PredictorOptions().prepare_k
    await rt.close()
    assert PredictorOptions(checkpoint="c").to_dict()["checkpoint"] == "c"


async def _search(rt: PredictiveRetriever) -> list[str]:
    return (await rt.search(CONTEXT, "Who designed it?", k=2)).doc_ids


def test_one_retriever_serves_sync_and_async_callers(minilm: TextEncoder) -> None:
    store = _store(minilm)
    thread = RetrieverThread(lambda: open_foreign_retriever(store, encoder=minilm, backend=_linked()))
    first = thread.call(_search)
    assert asyncio.run(thread.acall(_search)) == first  # from another event loop, without blocking it
    assert thread.schedule(_search).result(timeout=60) == first

    async def nested(rt: PredictiveRetriever) -> list[str]:
        return thread.call(_search)  # waiting for itself

    with pytest.raises(RetrieverError, match="acall"):
        thread.call(nested)
    thread.close()
    thread.close()  # idempotent
    with pytest.raises(RetrieverError, match="closed"):
        thread.call(_search)


async def test_a_ready_retriever_can_be_handed_over(minilm: TextEncoder) -> None:
    rt = await open_foreign_retriever(_store(minilm), encoder=minilm, backend=_linked())
    thread = RetrieverThread(rt)
    assert len(await thread.acall(_search)) == 2
    await asyncio.to_thread(thread.close)
