"""train_predictor and the ``prime-retriever train`` command line."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from prime_retriever.model.checkpoint import load_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.text.documents import Document
from training.data import data_dir
from training.data.examples import Example
from training.trainer import TrainOptions, resolve_precision, train_predictor
from training.training_config import TrainingConfig

DATA = data_dir()  # $PRIME_DATA_DIR or ../shared/data


class ToyEncoder:
    """Deterministic (cross-process) 16-d unit vectors: a text ``'dK|...'`` lands near document K."""

    name = "toy-16"
    dim = 16

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               show_progress: bool | None = None) -> npt.NDArray[np.float32]:
        out = []
        for t in texts:
            base, _, noise = t.partition("|")
            v = np.frombuffer(hashlib.sha256(base.encode()).digest()[:16], dtype=np.uint8).astype(np.float32) - 127.5
            if noise:
                n = np.frombuffer(hashlib.sha256(t.encode()).digest()[:16], dtype=np.uint8).astype(np.float32) - 127.5
                v = v + 1.5 * n
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)


def toy_data() -> tuple[list[Example], list[Example], dict[str, Document]]:
    corpus = {f"d{i}": Document(id=f"d{i}", text=f"d{i}") for i in range(40)}
    ex = [Example(id=f"e{i}", context=(f"d{i % 40}|c{i}",), query=f"d{i % 40}|q{i}",
                  positive_ids=(f"d{i % 40}",), negative_ids=(f"d{(i + 5) % 40}",)) for i in range(96)]
    return ex[:80], ex[80:], corpus


def toy_configs() -> tuple[PredictorConfig, TrainingConfig]:
    """A tiny residual predictor for the 16-d toy encoder, and a short schedule."""
    cfg = PredictorConfig(input_dim=16, output_dim=16, hidden_dim=32, num_heads=2, num_layers=1, residual=True,
                          use_torch_compile=False)
    tc = TrainingConfig(batch_size=16, warmup_steps=2, num_epochs=2, learning_rate=1e-3,
                        y_encoder_lr_multiplier=0.0)
    return cfg, tc


def test_precision_choice() -> None:
    tc = TrainingConfig()
    assert resolve_precision(tc, "cpu", None) == "bf16-mixed"
    assert resolve_precision(tc, "cuda", None) == "16-mixed"
    assert resolve_precision(TrainingConfig(mixed_precision=False), "cpu", None) == "32-true"
    assert resolve_precision(tc, "cpu", "32-true") == "32-true"


def test_train_predictor_writes_a_project_checkpoint(tmp_path: Path) -> None:
    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck", TrainOptions(max_steps=8,
                          num_hard_negatives=1, progress_bar=False, verbose=False, dataset_names=["toy"]))
    assert res.steps == 8
    assert res.checkpoint_path == tmp_path / "ck"
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.meta.encoder is not None and loaded.meta.encoder.name == "toy-16"
    assert loaded.meta.provenance.datasets[0].name == "toy"
    assert set(res.best_metrics) >= {"val_r@10", "val_mrr"}
    assert loaded.meta.provenance.metrics["val_mrr"] == pytest.approx(res.best_metrics["val_mrr"])
    assert res.baseline_metrics and res.initial_metrics
    # residual predictor starts exactly at the query-embedding baseline
    assert res.initial_metrics["mrr"] == pytest.approx(res.baseline_metrics["mrr"], abs=1e-6)
    assert res.samples_per_second > 0 and res.final_train_loss == res.final_train_loss
    assert (tmp_path / "ck.logs").is_dir()


def test_training_fits_the_search_score_confidence_on_validation(tmp_path: Path) -> None:
    import torch

    from training.module import retrieval_metrics
    from training.training_set import build_training_sets

    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck", TrainOptions(max_steps=8,
                          progress_bar=False, verbose=False, logger=None))
    sc = res.score_confidence
    loaded = load_checkpoint(tmp_path / "ck")
    assert sc is not None and loaded.meta.score_confidence == sc and sc.n_fitted == len(val)
    # fitted on the kept weights' validation ranks: its hit rate is their share of gold-first rows
    _, val_set, _ = build_training_sets(train, val, corpus, ToyEncoder(), max_context_length=cfg.max_context_length)
    assert val_set is not None
    with torch.no_grad():
        pred = loaded.model.predict(val_set.context, val_set.query, val_set.context_mask).embedding
    _, rr = retrieval_metrics(pred, val_set.corpus, val_set.gold, val_set.excluded)
    assert 0.0 < sc.hit_rate < 1.0 and sc.hit_rate == pytest.approx(float((rr == 1).float().mean()))
    no_val = train_predictor(train, [], corpus, ToyEncoder(), cfg, tc, tmp_path / "ck2", TrainOptions(max_steps=4,
                             progress_bar=False, verbose=False, logger=None))
    assert no_val.score_confidence is None and load_checkpoint(tmp_path / "ck2").meta.score_confidence is None


def test_provenance_records_each_datasets_own_count(tmp_path: Path) -> None:
    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck",
        TrainOptions(max_steps=2, progress_bar=False,
                    verbose=False, logger=None, dataset_names={"hotpotqa": 50, "doc2dial": 30}))
    datasets = load_checkpoint(tmp_path / "ck").meta.provenance.datasets
    assert [(d.name, d.n_examples) for d in datasets] == [("hotpotqa", 50), ("doc2dial", 30)]


def test_query_only_is_a_probability_and_trains(tmp_path: Path) -> None:
    from prime_retriever.errors import PrimeError

    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    with pytest.raises(PrimeError, match="query_only"):
        train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "bad",
            TrainOptions(max_steps=2, query_only=1.5,
                        progress_bar=False, verbose=False))
    assert not (tmp_path / "bad").exists()
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck",
        TrainOptions(max_steps=4, query_only=0.5,
                          progress_bar=False, verbose=False, logger=None))
    assert res.steps == 4 and load_checkpoint(tmp_path / "ck").model.config.residual


def test_a_run_stopped_mid_epoch_validates_its_final_weights(tmp_path: Path) -> None:
    from prime_retriever.model.checkpoint import read_meta

    train, val, corpus = toy_data()  # 80 rows, batch 16: 5 steps an epoch
    cfg, tc = toy_configs()
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck", TrainOptions(max_steps=7,
                          progress_bar=False, verbose=False, logger=None))
    assert res.steps == 7 and [h["step"] for h in res.history] == [5.0, 7.0]
    best = max(res.history, key=lambda h: h["val_mrr"])
    if best["val_mrr"] > res.initial_metrics["mrr"]:
        assert read_meta(tmp_path / "ck").provenance.hyperparameters["global_step"] == int(best["step"])
    assert res.best_metrics["val_mrr"] == pytest.approx(max(res.initial_metrics["mrr"], best["val_mrr"]))


def test_the_checkpoint_holds_the_best_validations_weights(tmp_path: Path) -> None:
    """Training that improves, then falls back: the saved weights are the best validation's, not the last."""
    from prime_retriever.model.checkpoint import read_meta
    from training.module import evaluate_retrieval
    from training.training_set import build_training_sets

    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    tc = tc.model_copy(update={"learning_rate": 1e-2, "num_epochs": 6})
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck", TrainOptions(patience=10,
                          progress_bar=False, verbose=False, logger=None))
    best = max(res.history, key=lambda h: h["val_mrr"])
    last = res.history[-1]
    # the toy run must beat the untrained model and end below its best, or this test checks nothing
    assert best["val_mrr"] > res.initial_metrics["mrr"] and last["val_mrr"] < best["val_mrr"]
    assert read_meta(tmp_path / "ck").provenance.hyperparameters["global_step"] == int(best["step"])
    _, val_set, _ = build_training_sets(train, val, corpus, ToyEncoder(), max_context_length=cfg.max_context_length)
    assert val_set is not None
    reloaded = evaluate_retrieval(load_checkpoint(tmp_path / "ck").model, val_set)
    assert reloaded["mrr"] == pytest.approx(best["val_mrr"], abs=1e-5)
    assert res.best_metrics["val_mrr"] == pytest.approx(best["val_mrr"])


def test_stratified_validation_macro_averages_over_datasets(tmp_path: Path) -> None:
    """With ``stratify_validation`` the validation loop reports the mean over (dataset, framing) of
    each one's MRR: the kept checkpoint, scored that way, gives the same figure, not the plain mean."""
    from dataclasses import replace

    from training.module import evaluate_retrieval
    from training.training_set import build_training_sets

    train, val, corpus = toy_data()
    val = [replace(e, source="small" if i < 3 else "large") for i, e in enumerate(val)]  # 3 and 13 rows
    cfg, tc = toy_configs()
    tc = tc.model_copy(update={"learning_rate": 1e-2, "num_epochs": 6})
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck", TrainOptions(patience=10,
                          stratify_validation=True, progress_bar=False, verbose=False, logger=None))
    _, strat, _ = build_training_sets(train, val, corpus, ToyEncoder(), max_context_length=cfg.max_context_length,
                                      stratify_validation=True)
    _, plain, _ = build_training_sets(train, val, corpus, ToyEncoder(), max_context_length=cfg.max_context_length)
    assert strat is not None and plain is not None
    loaded = load_checkpoint(tmp_path / "ck")
    step = loaded.meta.provenance.hyperparameters["global_step"]
    assert isinstance(step, int) and step > 0  # a trained epoch, scored by the loop
    kept = loaded.model
    macro, mean = evaluate_retrieval(kept, strat)["mrr"], evaluate_retrieval(kept, plain)["mrr"]
    assert abs(macro - mean) > 1e-3  # the two strata differ, so the test can tell the averages apart
    assert res.best_metrics["val_mrr"] == pytest.approx(macro, abs=1e-5)
    assert res.initial_metrics["mrr"] == pytest.approx(evaluate_retrieval(None, strat)["mrr"], abs=1e-6)


def test_stop_reason_names_what_ended_the_run(tmp_path: Path) -> None:
    train, val, corpus = toy_data()  # 80 rows, batch 16: 5 steps an epoch
    cfg, tc = toy_configs()  # 2 epochs
    quiet: dict[str, Any] = {"progress_bar": False, "verbose": False, "logger": None}
    assert train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "a", TrainOptions(max_steps=3,
                           **quiet)).stop_reason == "max_steps"
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "b", TrainOptions(patience=0, **quiet))
    assert (res.stop_reason, res.steps) == ("max_epochs", 10)
    # a budget already spent: the Timer stops the fit before its first step, whatever the machine's speed;
    # without validation to seed it, the checkpoint is still written (the untrained model)
    res = train_predictor(train, [], corpus, ToyEncoder(), cfg, tc, tmp_path / "c",
        TrainOptions(time_budget_s=0.0, **quiet))
    assert (res.stop_reason, res.steps, res.checkpoint_path) == ("time_budget", 0, tmp_path / "c")
    assert load_checkpoint(tmp_path / "c").model.config == cfg
    long = tc.model_copy(update={"num_epochs": 60})
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, long, tmp_path / "d",
        TrainOptions(patience=1, **quiet))
    assert res.stop_reason == "early_stopping" and res.steps < 60 * 5


@pytest.mark.parametrize(("name", "text", "message"), [
    ("c.json", '{"predictor": {oops', "invalid JSON|cannot read the config"),
    ("c.yaml", "predictor: [unclosed", "invalid YAML"),
    ("c.json", '{"predictor": [1, 2]}', "'predictor' must be a mapping"),
    ("c.json", "[1]", "expected a mapping"),
    ("missing.json", None, "cannot read the config"),
])
def test_train_config_errors_are_one_line(tmp_path: Path, name: str, text: str | None, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from prime_retriever.cli.main import main

    if text is not None:
        (tmp_path / name).write_text(text)
    rc = main(["train", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "ck"),
               "--config", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert rc == 1 and "prime-retriever train: error:" in err and re.search(message, err)


def test_cli_parses_every_training_field() -> None:
    from prime_retriever.cli.main import build_parser

    parser = build_parser(load=["train"])
    args = parser.parse_args(["train", "--data", "a.jsonl", "--out", "ck", "--hidden-dim", "256",
                              "--num-layers", "2", "--residual", "true", "--attention-layout", "prefix",
                              "--learning-rate", "3e-4", "--batch-size", "32", "--mixed-precision", "false",
                              "--y-encoder-lr-multiplier", "0", "--max-steps", "5", "--framing", "multi_hop",
                              "--query-only", "0.25"])
    assert args.hidden_dim == 256 and args.residual is True and args.attention_layout == "prefix"
    assert args.learning_rate == 3e-4 and args.mixed_precision is False and args.framing == "multi_hop"
    assert args.query_only == 0.25
    for name in TrainingConfig.model_fields:
        assert hasattr(args, name), name


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "hotpotqa").is_dir(), reason="shared HotpotQA data not available")
def test_training_on_real_hotpotqa_lowers_loss_and_raises_recall(tmp_path: Path) -> None:
    """A small predictor on real HotpotQA first_hop examples, encoded with the real MiniLM (cached)."""
    from prime_retriever.text.embedding_cache import CachedEncoder
    from prime_retriever.text.encoders import HFTextEncoder
    from training.data import hotpotqa_files, load_hotpotqa_pool, split_examples

    ds = load_hotpotqa_pool(hotpot := hotpotqa_files(DATA), "first_hop")
    assert hotpot
    first = set(list(ds.corpus)[:2000])  # the head of the pooled corpus: shared with the full run's cache
    examples = [e for e in ds.examples if set(e.positive_ids) | set(e.negative_ids) <= first][:240]
    corpus = {d: ds.corpus[d] for e in examples for d in (*e.positive_ids, *e.negative_ids)}
    train, val = split_examples(examples, 0.2, salt="test")
    encoder = CachedEncoder(HFTextEncoder())
    cfg = PredictorConfig(input_dim=384, output_dim=384, hidden_dim=256, num_heads=4, num_layers=2,
                          residual=False, dropout=0.1, use_torch_compile=False)
    tc = TrainingConfig(batch_size=32, learning_rate=1e-3, warmup_steps=20, num_epochs=100,
                        gradient_checkpointing=False, mixed_precision=False, y_encoder_lr_multiplier=0.0)
    res = train_predictor(train, val, corpus, encoder, cfg, tc, tmp_path / "ck", TrainOptions(max_steps=200, patience=0,
                          progress_bar=False, verbose=False, num_hard_negatives=2, num_threads=1))
    assert res.history  # one validation per epoch
    assert res.final_train_loss < 2.0
    assert res.best_metrics["val_r@10"] > res.initial_metrics["r@10"] + 0.1


@pytest.mark.skipif(not (DATA / "hotpotqa").is_dir(), reason="shared HotpotQA data not available")
def test_cli_trains_with_link_expansion_and_saves_the_graph(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``prime-retriever train --link-candidates K``: the graph is built from the corpus, saved, and trained on."""
    from prime_retriever.cli.main import main
    from prime_retriever.retrieval.link_graph import LinkGraph

    out = tmp_path / "ck"
    rc = main(["train", "--data", str(DATA / "hotpotqa" / "hipporag_train100.json"), "--limit", "60",
               "--out", str(out), "--link-candidates", "4", "--link-seeds", "1", "--max-context-length", "8",
               "--hidden-dim", "32", "--num-heads", "2", "--num-layers", "1", "--max-steps", "3",
               "--batch-size", "16", "--mixed-precision", "false", "--no-progress", "--threads", "1"])
    assert rc == 0
    graph = LinkGraph.load(tmp_path / "ck.links.json")
    assert graph.num_links > 0
    cfg = load_checkpoint(out).model.config
    assert (cfg.link_candidates, cfg.link_seeds, cfg.max_context_length) == (4, 1, 8)
    assert "ck.links.json" in capsys.readouterr().out
    # a malformed graph is refused before any training: a typed error, exit code 1, no checkpoint
    (tmp_path / "bad.json").write_text("{}")
    assert main(["train", "--data", str(DATA / "hotpotqa" / "hipporag_train100.json"), "--limit", "20",
              "--out", str(tmp_path / "ck2"), "--link-candidates", "4", "--links", str(tmp_path / "bad.json")]) == 1
    assert "format version" in capsys.readouterr().err and not (tmp_path / "ck2").exists()


def test_train_data_from_several_files_is_merged_and_deduplicated(tmp_path: Path) -> None:
    """``train --data A --data B``: one dataset holding both files' examples and documents, a question
    that both files carry once."""
    from prime_retriever.cli.train import _load_data
    from training.data.generic import write_corpus, write_examples

    train, _, corpus = toy_data()
    docs = list(corpus.values())  # every file needs the documents its examples name
    write_examples(tmp_path / "a.jsonl", train[:30])
    write_corpus(tmp_path / "a.corpus.jsonl", docs)
    write_examples(tmp_path / "b.jsonl", train[25:60])  # e25..e29 are in both files
    write_corpus(tmp_path / "b.corpus.jsonl", docs)
    ds = _load_data([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], "given", None)
    assert sorted(e.id for e in ds.examples) == sorted(e.id for e in train[:60])
    assert set(ds.corpus) == set(corpus) and all(ds.corpus[i].text == corpus[i].text for i in corpus)
    assert len(_load_data([str(tmp_path / "b.jsonl")], "given", None).examples) == 35


@pytest.mark.skipif(not (DATA / "hotpotqa").is_dir(), reason="shared HotpotQA data not available")
def test_cli_says_why_training_stopped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prime_retriever.cli.main import main

    common = ["train", "--data", str(DATA / "hotpotqa" / "hipporag_train100.json"), "--limit", "30",
              "--hidden-dim", "32", "--num-heads", "2", "--num-layers", "1", "--batch-size", "8",
              "--mixed-precision", "false", "--no-progress", "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "a"), "--max-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "stopped by max_steps" in out and "warning" not in out
    # 30 questions leave one for validation: too few to fit the search-score confidence, and the CLI says so
    assert "1 held-out" in out
    assert "search-score confidence: not fitted (it needs at least 2 validation questions)" in out
    assert load_checkpoint(tmp_path / "a").meta.score_confidence is None
    # a budget already spent ends the run before its first step on any machine: the CLI says so, and keeps a checkpoint
    assert main([*common, "--out", str(tmp_path / "b"), "--time-budget", "0"]) == 0
    out = capsys.readouterr().out
    assert "stopped by time_budget" in out
    assert "warning: the wall-clock safety net (0 s, --time-budget) ended training" in out
    assert load_checkpoint(tmp_path / "b").meta.provenance.hyperparameters["global_step"] == 0


@pytest.mark.skipif(not (DATA / "hotpotqa").is_dir(), reason="shared HotpotQA data not available")
def test_cli_says_a_fine_tuned_y_encoder_leaves_the_score_confidence_unfitted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prime_retriever.cli.main import main

    assert main(["train", "--data", str(DATA / "hotpotqa" / "hipporag_train100.json"), "--limit", "30",
                 "--eval-fraction", "0.3", "--hidden-dim", "32", "--num-heads", "2", "--num-layers", "1",
                 "--batch-size", "8", "--mixed-precision", "false", "--no-progress", "--threads", "1",
                 "--max-steps", "1", "--y-encoder-lr-multiplier", "0.1", "--out", str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    held_out = int(re.search(r"(\d+) held-out", out).group(1))  # type: ignore[union-attr]
    assert held_out >= 2  # enough to fit on: the fine-tuned Y-Encoder is what leaves it unfitted
    assert "search-score confidence: not fitted (the Y-Encoder was fine-tuned: re-index the corpus first)" in out
    meta = load_checkpoint(tmp_path / "ck").meta
    assert meta.needs_reindex and meta.score_confidence is None
