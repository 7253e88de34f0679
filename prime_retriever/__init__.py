"""prime_retriever: predict the embedding of the ideal context, then search Qdrant with it."""

from __future__ import annotations

__version__ = "0.1.0"
