"""prime_retriever: predict the embedding of the ideal context, then search Qdrant with it.

The public API::

    from prime_retriever import PredictiveRetriever, EmbeddingPredictor, PredictorConfig

See the README for the two entry points (``make demo``, ``make test``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from prime_retriever.checkpoint import (
    CheckpointMeta,
    EncoderInfo,
    LoadedCheckpoint,
    Provenance,
    attach_score_confidence,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from prime_retriever.config import PredictorConfig, TrainingConfig
from prime_retriever.documents import Document, scope_filter
from prime_retriever.embedding_cache import CachedEncoder, EmbeddingCache
from prime_retriever.encoders import HFTextEncoder, TextEncoder, check_encoder_dims
from prime_retriever.errors import (
    CheckpointError,
    DataError,
    EncoderError,
    PredictorError,
    PrimeError,
    RetrieverError,
    StoreError,
)
from prime_retriever.inference import EagerPredictor, PredictorBackend
from prime_retriever.link_graph import LinkExpansion, LinkGraph, LinkGraphError
from prime_retriever.predictive_cache import CacheStats, PredictiveCache
from prime_retriever.predictor import ContextKV, EmbeddingPredictor, PredictorTransformerBlock
from prime_retriever.qdrant_store import QdrantStore
from prime_retriever.retriever import Hit, PredictiveRetriever, RetryPolicy, SearchResult, open_store
from prime_retriever.schemas import PredictorInput, PredictorOutput
from prime_retriever.score_confidence import ScoreConfidence
from prime_retriever.store import ScoredDoc, StoreUnavailableError, VectorStore

__all__ = [
    "CacheStats",
    "CachedEncoder",
    "CheckpointError",
    "CheckpointMeta",
    "ContextKV",
    "DataError",
    "Document",
    "EagerPredictor",
    "EmbeddingCache",
    "EmbeddingPredictor",
    "EncoderError",
    "EncoderInfo",
    "HFTextEncoder",
    "Hit",
    "LinkExpansion",
    "LinkGraph",
    "LinkGraphError",
    "LoadedCheckpoint",
    "PredictiveCache",
    "PredictiveRetriever",
    "PredictorBackend",
    "PredictorConfig",
    "PredictorError",
    "PredictorInput",
    "PredictorOutput",
    "PredictorTransformerBlock",
    "PrimeError",
    "Provenance",
    "QdrantStore",
    "RetrieverError",
    "RetryPolicy",
    "ScoreConfidence",
    "ScoredDoc",
    "SearchResult",
    "StoreError",
    "StoreUnavailableError",
    "TextEncoder",
    "TrainingConfig",
    "VectorStore",
    "__version__",
    "attach_score_confidence",
    "check_encoder_dims",
    "load_checkpoint",
    "open_store",
    "save_checkpoint",
    "scope_filter",
    "verify_checkpoint",
]
