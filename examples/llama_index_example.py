"""LlamaIndex over a stock QdrantVectorStore: the predicted vector drives your own VectorIndexRetriever."""

import os

from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.retrievers import VectorIndexRetriever
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from prime_retriever import Document, HFTextEncoder
from prime_retriever.integrations import llama_index as prime
from prime_retriever.integrations.foreign_retriever import PredictorOptions

DOCS = [
    Document(id="d1", title="Demon Dice", text="Demon Dice is a collectible dice game created by Lester Smith."),
    Document(id="d2", title="Lester Smith", text="Lester Smith is an American game designer, known for Dragon Dice."),
    Document(id="d3", title="Dragon Dice", text="Dragon Dice is a dice game published by TSR in 1995."),
]
CONTEXT = ["user: I just played Demon Dice.", "assistant: A fun game! What would you like to know?"]
QUERY = "Who designed it, and what else did he make?"

encoder = HFTextEncoder()
vector_store = QdrantVectorStore("docs", client=QdrantClient(location=":memory:"))
index = VectorStoreIndex([prime.text_node(d) for d in DOCS], embed_model=prime.PrimeEmbedding(encoder),
                         storage_context=StorageContext.from_defaults(vector_store=vector_store))
options = PredictorOptions(checkpoint=os.environ.get("PRIME_CHECKPOINT"))  # None: a random predictor

# the cheapest drop-in: only QueryBundle.embedding changes; filters and postprocessors stay yours
stock = VectorIndexRetriever(index, similarity_top_k=2)
drop_in = prime.PredictiveEmbeddingRetriever.from_vector_store(stock, vector_store, options, encoder=encoder)
drop_in.set_context(CONTEXT)
for n in drop_in.retrieve(QUERY):
    print("stock retriever:", n.node.metadata["title"], round(n.score or 0.0, 4))

full = prime.PrimeLlamaRetriever.from_vector_store(vector_store, options, encoder=encoder, context=CONTEXT, k=2)
for n in full.retrieve(QUERY):  # PredictiveRetriever.search itself: each hit says which path served it
    print("prime retriever:", n.node.metadata["title"], round(n.score or 0.0, 4), n.node.metadata["prime_source"])
drop_in.close()
full.close()
