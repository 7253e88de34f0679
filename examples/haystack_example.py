"""Haystack: the predicted query embedding feeds a stock QdrantEmbeddingRetriever in a stock pipeline."""

import os

from haystack import Document, Pipeline
from haystack.components.writers import DocumentWriter
from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

from prime_retriever.integrations.haystack import PredictiveQueryEmbedder, PrimeDocumentEmbedder, PrimeRetriever

PARAGRAPHS = {
    "Demon Dice": "Demon Dice is a collectible dice game created by Lester Smith.",
    "Lester Smith": "Lester Smith is an American game designer, known for Dragon Dice.",
    "Dragon Dice": "Dragon Dice is a dice game published by TSR in 1995.",
}
DOCS = [Document(id=title, content=text, meta={"title": title}) for title, text in PARAGRAPHS.items()]
CONTEXT = ["user: I just played Demon Dice.", "assistant: A fun game! What would you like to know?"]
QUERY = "Who designed it, and what else did he make?"
CHECKPOINT = os.environ.get("PRIME_CHECKPOINT")  # None: a random predictor

store = QdrantDocumentStore(location=":memory:", index="docs", embedding_dim=384, similarity="cosine")
indexing = Pipeline()  # the stock writer; our embedder embeds "title: text", as prime indexes
indexing.add_component("embedder", PrimeDocumentEmbedder())
indexing.add_component("writer", DocumentWriter(document_store=store))
indexing.connect("embedder.documents", "writer.documents")
indexing.run({"embedder": {"documents": DOCS}})
query, embedder = Pipeline(), PredictiveQueryEmbedder(document_store=store, checkpoint=CHECKPOINT)
query.add_component("embedder", embedder)
query.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=2))
query.connect("embedder.embedding", "retriever.query_embedding")
for doc in query.run({"embedder": {"query": QUERY, "context": CONTEXT}})["retriever"]["documents"]:
    print("stock retriever:", doc.meta["title"], round(doc.score or 0.0, 4))

full = PrimeRetriever(document_store=store, checkpoint=CHECKPOINT, top_k=2)  # PredictiveRetriever.search itself
for doc in full.run(query=QUERY, context=CONTEXT)["documents"]:
    print("prime retriever:", doc.meta["title"], round(doc.score or 0.0, 4), doc.meta["prime_source"])
embedder.close()
full.close()
