"""``prime-retriever index`` end to end on real components (MiniLM, Qdrant local mode and Edge)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from prime_retriever.cli import index as index_cli
from prime_retriever.cli import main as cli
from prime_retriever.text.documents import Document
from prime_retriever.text.encoders import HFTextEncoder
from tests.prime_retriever.retrieval.test_retriever import embedding_cache_dir, hotpot_sample, shared_encoder


def _write_corpus(path: Path, docs: Sequence[Document]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text, "title": d.title}) + "\n")


@pytest.mark.parametrize("kind", ["local", "edge"])
def test_index_cli(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pytestconfig: pytest.Config,
) -> None:
    docs = hotpot_sample().docs[:25]
    corpus = tmp_path / "corpus.jsonl"
    _write_corpus(corpus, docs)
    # the CLI builds its encoder with load_encoder() (encoder="fast"): hand it the already-loaded one
    asked: list[str | None] = []

    def loaded_encoder(model: str | None = None) -> HFTextEncoder:
        asked.append(model)  # what the command asked for: the bundled model unless --encoder says
        return shared_encoder()

    monkeypatch.setattr(index_cli, "load_encoder", loaded_encoder)
    argv = [
        "index",
        "--corpus",
        str(corpus),
        "--store",
        kind,
        "--path",
        str(tmp_path / kind),
        "--cache-dir",
        str(embedding_cache_dir(pytestconfig)),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["indexed"] == 25 and report["count_after"] == 25
    assert asked == [None]
    assert cli.main(argv) == 0  # re-run: nothing to do
    report = json.loads(capsys.readouterr().out)
    assert report["indexed"] == 0 and report["skipped_existing"] == 25 and report["count_after"] == 25


def test_index_cli_needs_a_path_for_local_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.jsonl"
    _write_corpus(corpus, hotpot_sample().docs[:2])
    assert cli.main(["index", "--corpus", str(corpus), "--store", "edge"]) == 1
    assert "--path" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["local", "edge"])
def test_index_cli_hybrid(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str], pytestconfig: pytest.Config) -> None:
    """``--hybrid`` builds a collection with BM25 vectors: searched hybrid, and refusing documents without them."""
    import asyncio

    from prime_retriever.errors import StoreError
    from prime_retriever.stores.open import open_store
    from prime_retriever.text.bm25 import Bm25Encoder

    docs = hotpot_sample().docs[:25]
    corpus = tmp_path / "corpus.jsonl"
    _write_corpus(corpus, docs)
    monkeypatch.setattr(index_cli, "load_encoder", lambda model=None: shared_encoder())
    argv = ["index", "--corpus", str(corpus), "--store", kind, "--path", str(tmp_path / kind), "--hybrid",
            "--cache-dir", str(embedding_cache_dir(pytestconfig)), "--no-progress"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["count_after"] == 25
    enc = shared_encoder()

    async def check() -> None:
        async with open_store(kind, path=tmp_path / kind) as store:
            await store.ensure_collection(enc.dim, enc.name)  # dense search of a hybrid collection is fine,
            with pytest.raises(StoreError, match="sparse="):  # a document without its BM25 vector is not
                await store.upsert(["x"], enc.encode(["x"], show_progress=False), [{}])
        async with open_store(kind, path=tmp_path / kind) as store:
            await store.ensure_collection(enc.dim, enc.name, sparse=True)
            q = docs[3].title
            vec = enc.encode([q], show_progress=False)[0]
            hits = await store.search(vec, 3, sparse=Bm25Encoder().embed_query(docs[3].text))
            assert hits[0].doc_id == docs[3].id

    asyncio.run(check())
