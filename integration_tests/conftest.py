"""Integration tests: the real encoder, the real shipped data, real Qdrant (local mode / edge)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prime_retriever import Document, HFTextEncoder, LinkGraph
from tests.conftest import prime_data_dir
from tests.prime_retriever.integrations.fixtures import Conversation, conversations, hotpot_corpus

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "assert_example_runs", "convs", "corpus", "encoder", "prime_data_dir"]


# -- the framework tests' setup (Haystack, LangChain, LlamaIndex): one corpus, its conversations, MiniLM --


@pytest.fixture(scope="module")
def corpus(prime_data_dir: Path) -> list[Document]:
    """A small real HotpotQA corpus (the context paragraphs of the first questions)."""
    return hotpot_corpus(prime_data_dir)


@pytest.fixture(scope="module")
def convs(prime_data_dir: Path, corpus: list[Document]) -> list[Conversation]:
    """Conversations ending in a HotpotQA question, each reaching the predictor through link expansion."""
    out = conversations(prime_data_dir)
    graph = LinkGraph.build(corpus)
    # the comparison means something only if link expansion reaches the predictor
    assert all(graph.candidates([*c.context, c.query], []) for c in out)
    return out


@pytest.fixture(scope="module")
def encoder() -> HFTextEncoder:
    """The real MiniLM encoder, loaded once per test module."""
    return HFTextEncoder()


def assert_example_runs(script: str, **env: str) -> None:
    """``examples/<script>`` runs to the end (with ``env`` added to the environment) and prints predicted hits."""
    r = subprocess.run([sys.executable, str(REPO / "examples" / script)], cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "predicted" in r.stdout
