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
