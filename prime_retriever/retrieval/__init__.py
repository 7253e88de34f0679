"""Retrieval: the PredictiveRetriever and what it runs (micro-batching, the PREPARE cache, link expansion, indexing)."""
