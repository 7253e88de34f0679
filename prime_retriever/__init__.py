"""prime_retriever: predict the embedding of the ideal context, then search Qdrant with it.

The public API::

    from prime_retriever import PredictiveRetriever, Document

    async with PredictiveRetriever.from_config("ckpt/", store="edge:index/") as retriever:
        await retriever.index([Document(id="d1", text="...", title="...")])
        hits = await retriever.search(["user: ..."], "the question", k=5)

Everything else lives in the sub-packages along the search path: ``model`` (the predictor and its
checkpoints), ``backends`` (eager, fast torch and ONNX inference), ``stores`` (Qdrant local mode,
server and Edge), ``text`` (encoders and the embedding cache), ``retrieval`` (the retriever and what
it runs) and ``cli``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from prime_retriever.errors import (
    CheckpointError,
    DataError,
    EncoderError,
    PredictorError,
    PrimeError,
    RetrieverError,
    StoreError,
)
from prime_retriever.model.checkpoint import load_checkpoint, save_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.retrieval.link_graph import LinkGraph
from prime_retriever.retrieval.predictive_cache import PredictiveCache
from prime_retriever.retrieval.results import Hit, SearchResult
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import ScoredDoc, StoreUnavailableError, VectorStore
from prime_retriever.stores.open import open_store
from prime_retriever.text.documents import Document, scope_filter
from prime_retriever.text.encoders import HFTextEncoder, TextEncoder

__all__ = [
    "CheckpointError",
    "DataError",
    "Document",
    "EmbeddingPredictor",
    "EncoderError",
    "HFTextEncoder",
    "Hit",
    "LinkGraph",
    "PredictiveCache",
    "PredictiveRetriever",
    "PredictorConfig",
    "PredictorError",
    "PrimeError",
    "RetrieverError",
    "ScoredDoc",
    "SearchResult",
    "StoreError",
    "StoreUnavailableError",
    "TextEncoder",
    "VectorStore",
    "__version__",
    "load_checkpoint",
    "open_store",
    "save_checkpoint",
    "scope_filter",
]
