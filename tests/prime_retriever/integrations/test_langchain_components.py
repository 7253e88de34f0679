"""The LangChain components on a tiny corpus (real langchain-core, langchain-qdrant, MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document as LangChainDocument
from langchain_core.messages import SystemMessage
from langchain_qdrant import QdrantVectorStore

from prime_retriever import Document, PredictorError, TextEncoder
from prime_retriever.integrations.langchain import PrimeEmbeddings, PrimeLangChainRetriever, page_content

DOCS = [
    Document("demon", "Demon Dice is a collectible dice game created by Lester Smith.", "Demon Dice"),
    Document("smith", "Lester Smith designed Dragon Dice for TSR.", "Lester Smith"),
    Document("dragon", "Dragon Dice is a dice game published by TSR in 1995.", "Dragon Dice"),
]


async def test_embeddings_are_the_encoders(minilm: TextEncoder) -> None:
    emb = PrimeEmbeddings(minilm)
    want = np.asarray(minilm.encode(["a", "b"], batch_size=2, show_progress=False))
    np.testing.assert_allclose(emb.embed_documents(["a", "b"]), want, atol=1e-6)
    np.testing.assert_allclose(emb.embed_query("a"), want[0], atol=1e-6)
    np.testing.assert_allclose(await emb.aembed_documents(["b"]), want[1:], atol=1e-6)
    np.testing.assert_allclose(await emb.aembed_query("b"), want[1], atol=1e-6)
    assert page_content(DOCS[0]) == DOCS[0].encoding_text


async def test_retrieval_from_the_chat_history(minilm: TextEncoder) -> None:
    pages = [LangChainDocument(page_content=page_content(d), metadata={"title": d.title}) for d in DOCS]
    vs = QdrantVectorStore.from_documents(pages, PrimeEmbeddings(minilm), location=":memory:", collection_name="c")
    history = InMemoryChatMessageHistory()
    history.add_message(SystemMessage("You answer questions about games."))
    history.add_user_message("I played Demon Dice.")
    history.add_ai_message(" ")
    with pytest.warns(UserWarning, match="no checkpoint"):
        r = PrimeLangChainRetriever.from_vector_store(vs, encoder=minilm, chat_history=history, k=2)
        try:
            assert r.history() == ["system: You answer questions about games.", "user: I played Demon Dice."]
            sync = r.invoke("Who designed it?")
            found = vs.similarity_search_with_score_by_vector(
                r.thread.call(lambda rt: rt.predict_vector(r.history(), "Who designed it?")).tolist(), k=2)
            assert [d.id for d in sync] == [str(d.metadata["_id"]) for d, _ in found]
            assert [d.metadata["prime_score"] for d in sync] == pytest.approx([s for _, s in found], abs=1e-5)
            assert sync[0].metadata["prime_source"] == "predicted"
            assert sync[0].page_content.startswith(sync[0].metadata["title"])
            assert [d.id for d in await r.ainvoke("Who designed it?")] == [d.id for d in sync]
            with pytest.raises(PredictorError):
                r.prepare_soon()  # no session id
            assert r.prepare_soon("s").result(timeout=60).source == "predicted"
        finally:
            r.close()
