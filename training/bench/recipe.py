"""The training recipe the benchmark uses: which model, which data, which schedule.

The recipe is data: :class:`Recipe` holds every choice, :func:`train_with_recipe` applies it. A
validation split of the TRAIN examples (by group) drives early stopping of both the predictor and
the linear adapter; eval examples are never seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prime_retriever.errors import PrimeError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.text.embedding_cache import CachedEncoder
from training.bench.adapter import AdapterResult, LinearAdapter, train_adapter
from training.bench.suite import BenchSuite
from training.bridge_pairs import BRIDGE_SOURCE, bridge_examples
from training.data import EncodedCorpus, Example, split_examples
from training.trainer import TrainOptions, train_predictor
from training.training_config import TrainingConfig
from training.training_set import build_training_sets


@dataclass(frozen=True)
class Recipe:
    """Every choice of the benchmark's training run."""

    hidden_dim: int = 128
    num_layers: int = 1
    num_heads: int = 4
    dropout: float = 0.1
    residual: bool = True
    input_mixing: bool = True  # learned Rocchio-style mixing (measured: Doc2Dial P@5 x1.43 -> x1.67)
    attention_layout: str = "bidirectional"
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    batch_size: int = 64
    num_epochs: int = 40
    warmup_steps: int = 50
    # hard negatives per row, sampled from the non-gold link candidates + mined negatives below. Measured
    # (3 seeds): 16 + 16 mined cost LoCoMo P@5 x1.03 -> x0.86 and Doc2Dial x1.63 -> x1.54, gained nothing
    num_hard_negatives: int = 0
    link_candidates: int = 12  # linked documents that join the context (0 = no link expansion)
    link_seeds: int = 1  # top hits of the query embedding whose out-links are candidates
    mined_negatives: int = 0  # top-ranked non-gold rows of the query, as hard negatives
    # share of training rows shown with the query as their only context turn (no history, no links), as an
    # unlinked question is served. Measured (3 seeds): LoCoMo P@5 x1.03 -> x1.06, MRR x1.02 -> x1.06;
    # first_hop MRR x0.99 -> x1.01; multi_hop P@5 x1.20 -> x1.18
    query_only: float = 0.5
    # self-supervised first_hop rows from the corpus's links (training.bridge_pairs), train side only. Measured
    # (seed 0): all 13,362 give first_hop R@10 0.862 -> 0.877 but P@5 x1.140 -> x1.135, Doc2Dial x1.73 -> x1.59
    bridge_pairs: int = 0
    max_context_length: int = 20  # link candidates + the 8 most recent conversation turns
    val_fraction: float = 0.15
    patience: int = 5
    stratify_validation: bool = False  # macro-average validation over (dataset, framing): measured worse
    # training is bounded by epochs and early stopping, so the same seed gives the same checkpoint on any
    # machine of a kind; this wall-clock limit is only a safety net, ~10x the slowest normal run seen
    # (693 s under load on a 2-core machine), and the bench warns when it, not the schedule, ended training
    time_budget_s: float = 7200.0

    def __post_init__(self) -> None:
        if self.bridge_pairs < 0:  # checked before any encoding or training
            raise PrimeError(f"bridge_pairs is a count; got {self.bridge_pairs}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def predictor_config(self, dim: int) -> PredictorConfig:
        return PredictorConfig(
            input_dim=dim,
            output_dim=dim,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            dropout=self.dropout,
            residual=self.residual,
            input_mixing=self.input_mixing,
            attention_layout=self.attention_layout,
            max_context_length=self.max_context_length,
            link_candidates=self.link_candidates,
            link_seeds=self.link_seeds,
            use_torch_compile=False,
        )

    def training_config(self) -> TrainingConfig:
        return TrainingConfig(
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            num_epochs=self.num_epochs,
            warmup_steps=self.warmup_steps,
            gradient_checkpointing=False,
            mixed_precision=False,
            y_encoder_lr_multiplier=0.0,
        )


def training_examples(suite: BenchSuite, recipe: Recipe) -> list[Example]:
    """The supervised examples of the suite's train side."""
    return list(suite.train)


def suite_bridge_examples(suite: BenchSuite, graph: LinkGraph, *, limit: int, seed: int) -> list[Example]:
    """Masked-bridge examples (:mod:`training.bridge_pairs`) from what training may see: the train corpus,
    without any eval question's gold document."""
    held_out = {p for exs in suite.eval.values() for ex in exs for p in ex.positive_ids}
    return bridge_examples(suite.train_corpus, graph, limit=limit, seed=seed, exclude=held_out)


def _fit_adapter(train: list[Example], val: list[Example], suite: BenchSuite, encoder: CachedEncoder, recipe: Recipe,
                 seed: int) -> AdapterResult:
    """The linear adapter on the predictor's own examples, loss and validation split."""
    train_set, val_set, _ = build_training_sets(train, val, suite.train_corpus, encoder, max_context_length=1)
    return train_adapter(train_set, val_set, batch_size=recipe.batch_size, seed=seed)


def train_with_recipe(
    suite: BenchSuite, encoder: CachedEncoder, enc_corpus: EncodedCorpus, out: Path, recipe: Recipe, *, seed: int = 0,
    graph: LinkGraph | None = None, reuse: dict[str, Any] | None = None,
) -> tuple[Path, LinearAdapter, dict[str, Any]]:
    """Train the predictor and the linear adapter on the suite's train side; return (checkpoint, adapter, info).

    With ``reuse`` (the ``info`` an earlier call returned for the same suite, recipe and seed, whose checkpoint
    is still in ``out``) the predictor is not trained again: only the adapter is (seconds), on the same split.
    """
    examples = training_examples(suite, recipe)
    config = recipe.predictor_config(encoder.dim)
    if graph is None and (config.link_candidates or recipe.bridge_pairs):
        graph = LinkGraph.build(suite.corpus.values())
    expansion = None if graph is None else LinkExpansion.for_config(config, graph)
    train, val = split_examples(examples, recipe.val_fraction, salt=f"bench-val-{seed}")
    # the checkpoint's provenance: the datasets trained on (not the eval-only ones), each with its count
    names = {n: c["train"] for n, c in sorted(suite.sources.items()) if c.get("train")}
    if recipe.bridge_pairs:  # train side only: validation stays on real questions
        assert graph is not None  # built above
        bridges = suite_bridge_examples(suite, graph, limit=recipe.bridge_pairs, seed=seed)
        train = [*train, *bridges]
        names[BRIDGE_SOURCE] = len(bridges)
    if reuse is not None:
        adapter = _fit_adapter(train, val, suite, encoder, recipe, seed)
        return out / "checkpoint", adapter.adapter, {**reuse, "reused_checkpoint": True}
    result = train_predictor(
        train,
        val,
        suite.train_corpus,
        encoder,
        config,
        recipe.training_config(),
        out / "checkpoint",
        TrainOptions(time_budget_s=recipe.time_budget_s,
        seed=seed,
        num_hard_negatives=recipe.num_hard_negatives,
        patience=recipe.patience,
        dataset_names=names,
        log_dir=out / "logs", stratify_validation=recipe.stratify_validation,
        expansion=expansion, mined_negatives=recipe.mined_negatives, query_only=recipe.query_only))
    if result.checkpoint_path is None:
        raise RuntimeError("training produced no checkpoint")
    adapter = _fit_adapter(train, val, suite, encoder, recipe, seed)
    info = {
        "n_train": len(train),
        "n_val": len(val),
        "final_train_loss": result.final_train_loss,
        "samples_per_second": result.samples_per_second,
        "steps": result.steps,
        "epochs": result.epochs,
        "train_seconds": result.train_seconds,
        "stop_reason": result.stop_reason,
        "val_best": result.best_metrics,
        "val_initial": result.initial_metrics,
        "val_query_baseline": result.baseline_metrics,
        "adapter_val_mrr": adapter.val_mrr,
        "adapter_epochs": adapter.epochs,
    }
    return result.checkpoint_path, adapter.adapter, info
