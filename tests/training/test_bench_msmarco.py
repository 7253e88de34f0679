"""``bench --dataset msmarco`` on small official-format files that the test writes.

No MS MARCO data exists on our machines, so the files are built from real HotpotQA questions and
paragraphs, in MS MARCO's passage-ranking layout (collection.tsv, queries.dev.tsv, qrels.dev.tsv).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prime_retriever.cli import main


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


@pytest.mark.slow
def test_bench_msmarco_on_written_files(prime_data_dir: Path, tmp_path: Path) -> None:
    ms = tmp_path / "msmarco"
    write_msmarco(prime_data_dir / "hotpotqa" / "ircot_dev500.jsonl", ms)
    out = tmp_path / "out"
    rc = main(["bench", "--dataset", "msmarco", "--msmarco-dir", str(ms), "--out", str(out), "--store", "local",
               "--num-epochs", "2", "--time-budget-s", "60"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["framings"]) == {"given"}
    assert report["corpus_size"] == len((ms / "collection.tsv").read_text().splitlines())
    assert report["n_train"] + report["n_eval"] == 60
    methods = report["framings"]["given"]
    assert {"query_baseline", "linear_adapter", "concat_baseline", "predictor"} <= set(methods)
