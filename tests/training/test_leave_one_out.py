"""The leave-one-out protocol's pieces: the suites it builds, the foreign-history rows, the matrix's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import PrimeError
from training.bench.leave_one_out import LOO_DATASETS, load_named, suite_without
from training.bench.leave_one_out_report import matrix_markdown, method_metrics
from training.data import Dataset, Example
from training.mixing import FOREIGN_SUFFIX, foreign_history_examples


@pytest.fixture(scope="module")
def named(prime_data_dir: Path) -> list[tuple[str, list[Dataset]]]:
    return load_named(prime_data_dir)


@pytest.mark.parametrize("left_out", ["dstc11", "orsharc", "musique"])
def test_the_left_out_dataset_is_absent_from_training(named: list[tuple[str, list[Dataset]]], left_out: str) -> None:
    suite = suite_without(named, left_out, limit=8, max_eval=30)
    assert suite.unseen == [left_out]
    assert {suite.eval_dataset[ex.id] for exs in suite.eval.values() for ex in exs} == {left_out}
    assert all(len(exs) <= 30 for exs in suite.eval.values())
    trained = {n for n, c in suite.sources.items() if c["train"]}
    assert trained == {n for n, _ in named} - {left_out}
    # not even a negative or a link source: no eval-only document is in what training may see ...
    train_corpus = suite.train_corpus
    assert suite.eval_only_docs and not suite.eval_only_docs & set(train_corpus)
    # ... and no training example names one
    for ex in suite.train:
        assert all(i in train_corpus for i in (*ex.positive_ids, *ex.negative_ids, *ex.exclude_ids))


def test_every_run_shares_one_corpus(named: list[tuple[str, list[Dataset]]]) -> None:
    corpora = [suite_without(named, d, limit=5, max_eval=10).corpus.keys() for d in LOO_DATASETS]
    assert all(c == corpora[0] for c in corpora)  # so it is encoded, linked and indexed once


def _ex(i: int, group: str, context: tuple[str, ...]) -> Example:
    return Example(id=f"e{i}", context=context, query=f"q{i}", positive_ids=(f"d{i}",), group_id=group)


def test_foreign_history_takes_context_from_another_group() -> None:
    exs = [_ex(i, f"g{i % 3}", (f"turn of g{i % 3}",)) for i in range(30)]
    extra = foreign_history_examples(exs, 0.5, seed=1)
    assert len(extra) == 15
    by_id = {e.id: e for e in exs}
    for e in extra:
        src = by_id[e.id.removesuffix(FOREIGN_SUFFIX)]
        assert e.query == src.query and e.positive_ids == src.positive_ids and e.group_id == src.group_id
        assert e.context != src.context  # the history is another conversation's
    assert foreign_history_examples(exs, 0.0) == []
    assert foreign_history_examples([_ex(0, "g", ("t",)), _ex(1, "g", ("u",))], 1.0) == []  # one group only
    with pytest.raises(PrimeError):
        foreign_history_examples(exs, 1.5)


def test_method_metrics_oracle_bounds_both_and_paired_cis() -> None:
    gold = [{"a"}, {"b"}, {"c"}, {"d"}]
    ranked = {"query_baseline": [["a", "x"], ["x", "b"], ["x", "y"], ["d"]],
              "predictor": [["x", "a"], ["b", "x"], ["c", "y"], ["y", "z"]]}
    m = method_metrics(ranked, gold)
    rr = {k: m[k]["mrr"]["mean"] for k in m}
    assert rr["query_baseline"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert rr["predictor"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert rr["oracle"] == pytest.approx(1.0)
    assert rr["oracle"] >= max(rr["query_baseline"], rr["predictor"])
    assert m["query_baseline"]["mrr"]["minus_query_ci"] == [0.0, 0.0]
    lo, hi = m["oracle"]["mrr"]["minus_query_ci"]
    assert 0.0 <= lo <= hi
    report = {"runs": [{"left_out": "dstc11", "framings": {"given": m}, "seconds": {"train": 1.0, "evaluate": 1.0},
                        "training": {"steps": 3, "epochs": 1, "stop_reason": "max_epochs"}}],
              "seconds": {"total": 2.0, "shared": 0.5}}
    md = matrix_markdown(report)
    assert "| dstc11/given | predictor | 4 |" in md and "dstc11/given predictor" in md
    assert np.isfinite(m["predictor"]["p@5"]["ci"]).all()


def test_hybrid_predictor_is_compared_with_hybrid_query_paired() -> None:
    gold = [{"a"}, {"b"}, {"c"}, {"d"}]
    ranked = {"query_baseline": [["a"], ["x"], ["x"], ["x"]],
              "hybrid_query": [["x", "a"], ["x", "b"], ["x"], ["x"]],
              "hybrid_predictor": [["a"], ["b"], ["c"], ["x"]]}
    m = method_metrics(ranked, gold)
    lo, hi = m["hybrid_predictor"]["mrr"]["minus_hybrid_query_ci"]
    assert 0.0 < lo <= hi  # better on every question that differs
    report = {"runs": [{"left_out": "dstc11", "framings": {"given": m}, "seconds": {"train": 1.0, "evaluate": 1.0},
                        "training": {"steps": 3, "epochs": 1, "stop_reason": "max_epochs"}}],
              "seconds": {"total": 2.0, "shared": 0.5}}
    md = matrix_markdown(report)
    assert "| dstc11/given | hybrid_query |" in md
    # three questions with their gold in the top 5 against two
    assert "[ok] dstc11/given hybrid_predictor: P@5 ×1.500 hybrid_query" in md
