"""A reduced benchmark: a few hundred real questions, the real encoder, real Qdrant local mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prime_retriever.model.checkpoint import load_checkpoint
from training.bench.recipe import Recipe
from training.bench.runner import BenchOptions, run
from training.bench.suite import shipped_suite


@pytest.fixture(scope="module")
def reduced(prime_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    suite = shipped_suite(prime_data_dir, limit=300)
    opts = BenchOptions(out=tmp_path_factory.mktemp("reduced"), store="local", seed=0, recipe=Recipe())
    return run(suite, opts)


def test_report_has_every_framing_and_method(reduced: dict[str, Any]) -> None:
    assert set(reduced["framings"]) == {"first_hop", "multi_hop", "given"}
    for framing, methods in reduced["framings"].items():
        expected = {"query_baseline", "linear_adapter", "predictor"}
        if framing in ("multi_hop", "given"):
            expected.add("concat_baseline")
        assert expected <= set(methods)
        for m in methods.values():
            assert 0.0 <= m["p@5"] <= 1.0 and 0.0 <= m["mrr"] <= 1.0 and m["n"] > 20


def test_predictor_never_below_the_query_baseline_on_validation(reduced: dict[str, Any]) -> None:
    """The checkpoint kept is the best on the validation split, which includes the untrained (= baseline) start."""
    train = reduced["training"]
    assert train["val_best"]["val_mrr"] >= train["val_initial"]["mrr"] - 1e-9


def test_given_framing_predictor_beats_query_baseline(reduced: dict[str, Any]) -> None:
    given = reduced["framings"]["given"]
    assert given["predictor"]["p@5"] > given["query_baseline"]["p@5"]
    assert given["predictor"]["mrr"] > given["query_baseline"]["mrr"]


def test_multi_hop_predictor_beats_query_baseline(reduced: dict[str, Any]) -> None:
    mh = reduced["framings"]["multi_hop"]
    assert mh["predictor"]["p@5"] > mh["query_baseline"]["p@5"]
    assert mh["predictor"]["mrr"] > mh["query_baseline"]["mrr"]


def test_report_breaks_down_the_dataset_training_never_saw(reduced: dict[str, Any]) -> None:
    assert reduced["unseen_datasets"] == ["locomo"]
    assert reduced["sources"]["locomo"]["train"] == 0
    parts = reduced["by_dataset"]["given"]
    assert set(parts) == {"doc2dial", "locomo"}
    n = sum(parts[d]["predictor"]["n"] for d in parts)
    assert n == reduced["framings"]["given"]["predictor"]["n"]
    assert {"p@5", "mrr", "gains"} <= set(parts["locomo"]["predictor"])
    # the checkpoint's provenance names the datasets trained on, each with its own count, and not LoCoMo
    from prime_retriever.model.checkpoint import read_meta

    trained = {(d.name, d.n_examples) for d in read_meta(reduced["checkpoint"]).provenance.datasets}
    assert trained == {(n, c["train"]) for n, c in reduced["sources"].items() if c["train"]}


def test_the_confidence_is_the_checkpoints_score_calibration_and_informative(reduced: dict[str, Any]) -> None:
    """Training fits the search-score confidence on validation; searches report it, and on multi_hop
    (where about a third of the top hits are wrong) it tells a right top hit from a wrong one."""
    from prime_retriever.model.checkpoint import read_meta

    calibration = read_meta(reduced["checkpoint"]).score_confidence
    assert calibration is not None and calibration.model_dump(mode="json") == reduced["score_confidence"]
    assert calibration.n_fitted == reduced["training"]["n_val"]
    assert reduced["framings"]["multi_hop"]["predictor"]["confidence_auroc"] > 0.6


def test_link_expansion_is_what_the_predictor_was_served_with(reduced: dict[str, Any]) -> None:
    links = reduced["link_graph"]
    config = load_checkpoint(reduced["checkpoint"]).model.config
    recipe = Recipe()
    assert (config.link_seeds, config.link_candidates) == (recipe.link_seeds, recipe.link_candidates)
    assert links["links"] > 0 and links["expansion"] == {"seeds": recipe.link_seeds,
                                                         "max_candidates": recipe.link_candidates}


def test_fixed_seeds_give_the_same_numbers(prime_data_dir: Path, tmp_path: Path) -> None:
    suite = shipped_suite(prime_data_dir, limit=40)
    recipe = Recipe(num_epochs=2, time_budget_s=120)
    a = run(suite, BenchOptions(out=tmp_path / "a", store="local", seed=3, recipe=recipe))
    b = run(suite, BenchOptions(out=tmp_path / "b", store="local", seed=3, recipe=recipe))
    assert a["checkpoint_sha256"] == b["checkpoint_sha256"]
    for framing in a["framings"]:
        for method in a["framings"][framing]:
            for metric in ("p@1", "p@5", "r@10", "allin@10", "mrr"):
                assert a["framings"][framing][method][metric] == b["framings"][framing][method][metric]
