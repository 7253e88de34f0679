"""LangChain: PredictiveRetriever.search over a langchain-qdrant collection, predicting from the chat history."""

import asyncio
import os

from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document as LangChainDocument
from langchain_qdrant import QdrantVectorStore

from prime_retriever import Document, HFTextEncoder
from prime_retriever.integrations.foreign_retriever import PredictorOptions
from prime_retriever.integrations.langchain import PrimeEmbeddings, PrimeLangChainRetriever, page_content

DOCS = [
    Document(id="d1", title="Demon Dice", text="Demon Dice is a collectible dice game created by Lester Smith."),
    Document(id="d2", title="Lester Smith", text="Lester Smith is an American game designer, known for Dragon Dice."),
    Document(id="d3", title="Dragon Dice", text="Dragon Dice is a dice game published by TSR in 1995."),
]
encoder = HFTextEncoder()
pages = [LangChainDocument(page_content=page_content(d), metadata={"title": d.title}) for d in DOCS]  # "title: text"
vector_store = QdrantVectorStore.from_documents(pages, PrimeEmbeddings(encoder), location=":memory:",
                                                collection_name="docs")

history = InMemoryChatMessageHistory()
history.add_user_message("I just played Demon Dice.")
history.add_ai_message("A fun game! What would you like to know?")
options = PredictorOptions(checkpoint=os.environ.get("PRIME_CHECKPOINT"))  # None: a random predictor
retriever = PrimeLangChainRetriever.from_vector_store(vector_store, options, encoder=encoder, chat_history=history, k=2)

for doc in retriever.invoke("Who designed it, and what else did he make?"):
    print("sync:", doc.metadata["title"], round(doc.metadata["prime_score"], 4), doc.metadata["prime_source"])
for doc in asyncio.run(retriever.ainvoke("What else did TSR publish?")):
    print("async:", doc.metadata["title"], round(doc.metadata["prime_score"], 4), doc.metadata["prime_source"])
retriever.close()
