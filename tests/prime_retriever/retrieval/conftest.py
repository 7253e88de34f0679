"""Shared by the retriever tests: the embedding cache every test of this folder encodes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.prime_retriever.retrieval.test_retriever import embedding_cache_dir


@pytest.fixture
def cache_root(pytestconfig: pytest.Config) -> Path:
    """The directory of the cached MiniLM embeddings (see ``embedding_cache_dir``)."""
    return embedding_cache_dir(pytestconfig)
