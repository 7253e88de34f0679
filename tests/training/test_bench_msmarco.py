"""``bench --dataset msmarco`` on small official-format files that the test writes.

No MS MARCO data exists on our machines, so the files are built from real HotpotQA questions and
paragraphs, in MS MARCO's passage-ranking layout (collection.tsv, queries.dev.tsv, qrels.dev.tsv).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from prime_retriever.cli.main import main


def write_msmarco(src: Path, out: Path, n_questions: int = 60) -> None:
    out.mkdir()
    passages: dict[str, int] = {}
    queries, qrels = [], []
    with src.open() as f:
        for qid, line in enumerate(f):
            if qid == n_questions:
                break
            rec = json.loads(line)
            for ctx in rec["contexts"]:
                text = " ".join(ctx["paragraph_text"].split())
                pid = passages.setdefault(text, len(passages))
                if ctx["is_supporting"]:
                    qrels.append(f"{qid} 0 {pid} 1")
            queries.append(f"{qid}\t{rec['question_text']}")
    (out / "collection.tsv").write_text("".join(f"{pid}\t{text}\n" for text, pid in passages.items()))
    (out / "queries.dev.tsv").write_text("\n".join(queries) + "\n")
    (out / "qrels.dev.tsv").write_text("\n".join(qrels) + "\n")


@pytest.fixture(scope="module")
def msmarco_run(prime_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the written MS MARCO folder, the output folder of one bench run on it)."""
    tmp = tmp_path_factory.mktemp("bench_msmarco")
    ms = tmp / "msmarco"
    write_msmarco(prime_data_dir / "hotpotqa" / "ircot_dev500.jsonl", ms)
    out = tmp / "out"
    rc = main(["bench", "--dataset", "msmarco", "--msmarco-dir", str(ms), "--out", str(out), "--store", "local",
               "--num-epochs", "2", "--time-budget-s", "60"])
    assert rc == 0
    return ms, out


@pytest.mark.slow
def test_bench_msmarco_on_written_files(msmarco_run: tuple[Path, Path]) -> None:
    ms, out = msmarco_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["framings"]) == {"given"}
    assert report["corpus_size"] == len((ms / "collection.tsv").read_text().splitlines())
    assert report["n_train"] + report["n_eval"] == 60
    methods = report["framings"]["given"]
    assert {"query_baseline", "linear_adapter", "concat_baseline", "predictor"} <= set(methods)


def _store_size(path: Path, encoder: str) -> int:
    from prime_retriever.stores.qdrant import QdrantStore

    async def count() -> int:
        store = QdrantStore("prime_docs", path=str(path))
        try:
            await store.ensure_collection(384, encoder)  # the collection records the path that encoded it
            return await store.count()
        finally:
            await store.close()

    return asyncio.run(count())


@pytest.mark.slow
def test_bench_into_the_same_out_searches_only_the_new_corpus(
    prime_data_dir: Path, msmarco_run: tuple[Path, Path], tmp_path: Path
) -> None:
    # a second run on a smaller corpus into the same --out: the earlier run's documents must not stay searchable
    ms, first = msmarco_run
    out = tmp_path / "out"
    shutil.copytree(first, out)  # the earlier run's output, store included (the fixture's stays as it was)
    small = tmp_path / "small"
    write_msmarco(prime_data_dir / "hotpotqa" / "ircot_dev500.jsonl", small, n_questions=20)
    rc = main(["bench", "--dataset", "msmarco", "--msmarco-dir", str(small), "--out", str(out), "--store", "local",
               "--checkpoint", str(out / "checkpoint")])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    n_small = len((small / "collection.tsv").read_text().splitlines())
    assert report["corpus_size"] == n_small < len((ms / "collection.tsv").read_text().splitlines())
    assert _store_size(out / "store", report["encoder"]) == n_small


@pytest.mark.slow
def test_bench_says_when_its_time_budget_ended_training(
    prime_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a budget already spent stops training before its first step on any machine: the report says so, and the
    # run warns that its numbers depend on the machine's speed
    small = tmp_path / "small"
    write_msmarco(prime_data_dir / "hotpotqa" / "ircot_dev500.jsonl", small, n_questions=20)
    out = tmp_path / "out"
    rc = main(["bench", "--dataset", "msmarco", "--msmarco-dir", str(small), "--out", str(out), "--store", "local",
               "--num-epochs", "2", "--time-budget-s", "0"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["training"]["stop_reason"], report["training"]["steps"]) == ("time_budget", 0)
    assert "warning: the wall-clock safety net (0 s, --time-budget-s) ended training" in capsys.readouterr().out
    assert (out / "checkpoint" / "meta.json").is_file()  # the untrained (query-baseline) model is what was kept


def _copy_checkpoint(src: Path, dst: Path, **meta_changes: Any) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta.update(meta_changes)
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.slow
def test_bench_refuses_a_checkpoint_it_cannot_evaluate_before_encoding(
    msmarco_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ms, out = msmarco_run
    ckpt = out / "checkpoint"
    other = _copy_checkpoint(ckpt, tmp_path / "a" / "checkpoint", encoder={"name": "intfloat/e5-small-v2", "dim": 384})
    reindex = _copy_checkpoint(ckpt, tmp_path / "b" / "checkpoint", needs_reindex=True)
    bare = _copy_checkpoint(ckpt, tmp_path / "c" / "checkpoint")  # no adapter/ beside it
    (tmp_path / "eval.jsonl").write_text(json.dumps(
        {"id": "e1", "context": ["Who wrote it?"], "query": "Who wrote it?", "positive_ids": ["d1"]}) + "\n")
    (tmp_path / "eval.corpus.jsonl").write_text(json.dumps({"id": "d1", "text": "Someone wrote it."}) + "\n")
    cases = [
        (["--dataset", "msmarco", "--msmarco-dir", str(ms), "--checkpoint", str(other)], "intfloat/e5-small-v2"),
        (["--dataset", "msmarco", "--msmarco-dir", str(ms), "--checkpoint", str(reindex)], "needs_reindex"),
        (["--eval", str(tmp_path / "eval.jsonl"), "--checkpoint", str(bare)], "no adapter/ beside"),
        (["--eval", str(tmp_path / "eval.jsonl"), "--checkpoint", str(tmp_path / "missing")], "not found"),
    ]
    for n, (args, message) in enumerate(cases):
        run_out = tmp_path / f"out{n}"
        assert main(["bench", *args, "--out", str(run_out), "--store", "local"]) == 1
        assert message in capsys.readouterr().err
        assert not (run_out / "links.json").exists() and not (run_out / "store").exists()  # refused before any work


def test_bench_flags_refuse_what_they_would_silently_ignore(capsys: pytest.CaptureFixture[str]) -> None:
    from prime_retriever.cli.main import build_parser
    from training.bench import _suite

    parser = build_parser(load=["bench"])
    assert parser.parse_args(["bench", "--out", "x", "--residual", "on"]).residual is True
    assert parser.parse_args(["bench", "--out", "x", "--residual", "off"]).residual is False
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--out", "x", "--residual", "ture"])  # a typo used to mean False
    assert "expected a boolean" in capsys.readouterr().err
    args = parser.parse_args(["bench", "--out", "x", "--preset", "shipped", "--train", "t.jsonl"])
    with pytest.raises(SystemExit, match="give one data source, not --preset and --train"):
        _suite(args)
