"""Train a predictor: the :func:`train_predictor` Python API and the ``prime-retriever train`` command.

:func:`train_predictor` encodes the corpus and the examples once (pass a ``CachedEncoder`` to share
the work across runs), builds a :class:`~training.module.PredictorModule` and runs a Lightning
``Trainer``: mixed precision (``bf16-mixed`` on CPU, ``16-mixed`` on CUDA when
``TrainingConfig.mixed_precision``), validation every epoch, the best checkpoint (by ``val_mrr``)
saved in the project's own format (:func:`prime_retriever.checkpoint.save_checkpoint`), early
stopping on ``val_mrr``, a CSV logger (W&B on request), a progress bar and deterministic seeds.
Multi-process training uses Lightning's DDP strategies (``strategy="ddp"`` / ``"ddp_spawn"``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from torch.utils.data import DataLoader

from prime_retriever.checkpoint import (
    DatasetInfo,
    EncoderInfo,
    Provenance,
    attach_score_confidence,
    load_checkpoint,
    save_checkpoint,
)
from prime_retriever.config import PredictorConfig, TrainingConfig
from prime_retriever.documents import Document
from prime_retriever.errors import PrimeError
from prime_retriever.link_graph import LinkExpansion, LinkGraph
from prime_retriever.predictor import EmbeddingPredictor
from prime_retriever.score_confidence import ScoreConfidence
from training.data.encoded import TextEncoderLike
from training.data.examples import Example
from training.module import PredictorModule, TrainableYEncoder, evaluate_retrieval, top_two_scores
from training.training_set import (
    Batch,
    TrainingSet,
    build_training_sets,
    collate_eval_batch,
    collate_training_batch,
    index_dataset,
)

__all__ = ["BestCheckpoint", "TrainResult", "add_cli_arguments", "resolve_precision", "run_cli", "stop_reason",
           "time_budget_warning", "train_predictor"]

Y_ENCODER_DIR = "y_encoder"


@dataclass
class TrainResult:
    """What a training run produced."""

    checkpoint_path: Path | None
    best_metrics: dict[str, float]
    initial_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    final_train_loss: float
    samples_per_second: float
    steps: int
    epochs: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    # why the fit ended: "early_stopping", "max_epochs", "max_steps" or "time_budget". Only the last
    # depends on the machine's speed: a run it stopped may not give the same numbers twice.
    stop_reason: str = "max_epochs"
    # the search-score confidence fitted on validation and saved in the checkpoint (None: no validation,
    # fewer than 2 validation rows, or a fine-tuned Y-Encoder, whose corpus needs re-indexing first)
    score_confidence: ScoreConfidence | None = None


class _TrainCollator:
    def __init__(self, tset: TrainingSet, num_hard_negatives: int, query_only: float = 0.0) -> None:
        self.tset = tset
        self.k = num_hard_negatives
        self.query_only = query_only

    def __call__(self, indices: Sequence[int]) -> Batch:
        return collate_training_batch(self.tset, indices, num_hard_negatives=self.k, query_only=self.query_only)


class _EvalCollator:
    def __init__(self, tset: TrainingSet) -> None:
        self.tset = tset

    def __call__(self, indices: Sequence[int]) -> Batch:
        return collate_eval_batch(self.tset, indices)


class BestCheckpoint(Callback):
    """Save the predictor in the project's checkpoint format whenever ``monitor`` improves (rank 0 only)."""

    def __init__(self, path: str | Path, *, encoder: EncoderInfo | None, datasets: Sequence[DatasetInfo] = (),
                 monitor: str = "val_mrr", save_last_if_no_val: bool = True) -> None:
        self.path = Path(path)
        self.encoder = encoder
        self.datasets = list(datasets)
        self.monitor = monitor
        self.best: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.save_last_if_no_val = save_last_if_no_val
        self.saved = False

    def seed(self, module: PredictorModule, metrics: dict[str, float]) -> None:
        """Score the model before training as the first candidate: an epoch must beat it to be kept.

        A residual predictor starts exactly at the query-embedding baseline, so the saved
        checkpoint is never worse than the baseline on the validation split.
        """
        self.best = metrics[self.monitor]
        self.best_metrics = dict(metrics)
        self._save(0, module, self.best_metrics)

    def save(self, trainer: L.Trainer, module: PredictorModule, metrics: dict[str, float]) -> None:
        self._save(trainer.global_step, module, metrics)

    def _save(self, global_step: int, module: PredictorModule, metrics: dict[str, float]) -> None:
        y_dir: str | None = None
        if module.y_encoder is not None:
            module.y_encoder.save_pretrained(self.path / Y_ENCODER_DIR)
            y_dir = Y_ENCODER_DIR
        tc = module.training_config
        hyper: dict[str, float | int | str | bool | None] = {k: v for k, v in tc.model_dump().items()}
        hyper["global_step"] = global_step
        save_checkpoint(
            module.model, self.path, encoder=self.encoder,
            provenance=Provenance(datasets=self.datasets, metrics=metrics, hyperparameters=hyper,
                                  recipe="InfoNCE (in-batch negatives) + confidence BCE; prime_retriever.training"),
            needs_reindex=y_dir is not None, y_encoder_dir=y_dir,
        )
        self.saved = True

    def offer(self, value: float, metrics: dict[str, float], trainer: L.Trainer, module: PredictorModule, *,
              save: bool = True) -> None:
        """Keep ``metrics`` as the best, and save the model when ``save``, if ``value`` (the monitor) beats the best."""
        if self.best is None or value > self.best:
            self.best, self.best_metrics = value, dict(metrics)
            if save:
                self.save(trainer, module, self.best_metrics)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not isinstance(pl_module, PredictorModule):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        metrics = {k: float(t) for k, t in trainer.callback_metrics.items() if k.startswith("val_")}
        self.offer(float(value), metrics, trainer, pl_module, save=trainer.is_global_zero)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (self.best is None and self.save_last_if_no_val and trainer.is_global_zero
                and isinstance(pl_module, PredictorModule)):
            self.save(trainer, pl_module, {})


class _Throughput(Callback):
    """Time spent in training batches (forward, backward, optimiser), the samples they held, and step losses."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.samples = 0
        self.losses: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.samples += int(batch["query"].shape[0]) * trainer.world_size
        loss = trainer.callback_metrics.get("train_loss_step")
        if loss is not None:
            self.losses.append(float(loss))


class _ReleaseProcessGroup(Callback):
    """Destroy the process group that Lightning created for this fit, once every rank has finished.

    Lightning destroys only NCCL groups (at exit); a gloo group stays alive until interpreter shutdown,
    where its threads race the other rank's exit and ``ddp_spawn`` workers abort now and then
    ("terminate called without an active exception"). A group that existed before the fit (torchrun,
    the caller's own ``init_process_group``) belongs to the caller and is left alone.
    """

    def __init__(self, owned: bool) -> None:
        self.owned = owned

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dist = torch.distributed
        if self.owned and dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def stop_reason(trainer: L.Trainer, timer: Timer | None, *, max_steps: int | None, max_epochs: int) -> str:
    """Why ``trainer.fit`` ended: ``"time_budget"`` (``timer`` ran out), ``"max_steps"``, ``"max_epochs"``,
    else ``"early_stopping"`` (nothing else ends a fit before its limits)."""
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        return "time_budget"
    if max_steps is not None and trainer.global_step >= max_steps:
        return "max_steps"
    if max_steps is None and trainer.current_epoch >= max_epochs:
        return "max_epochs"
    return "early_stopping"


def time_budget_warning(budget_s: float, flag: str) -> str:
    """The line printed when a run's time budget, not its schedule or early stopping, ended training."""
    return (f"warning: the time budget ({budget_s:g} s, {flag}) ended training: on a faster or idler machine the "
            "same seed trains further and gives other numbers")


def resolve_precision(training_config: TrainingConfig, accelerator: str, precision: str | None) -> str:
    """``precision`` if given, else ``bf16-mixed`` (CPU) / ``16-mixed`` (CUDA) with mixed precision, else 32."""
    if precision is not None:
        return precision
    if not training_config.mixed_precision:
        return "32-true"
    cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    return "16-mixed" if cuda else "bf16-mixed"


def _y_encoder_path(encoder: Any) -> str | None:
    for obj in (encoder, getattr(encoder, "encoder", None)):
        path = getattr(obj, "model_path", None)
        if isinstance(path, str):
            return path
    return None


def train_predictor(
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    corpus: Mapping[str, Document],
    encoder: TextEncoderLike,
    predictor_config: PredictorConfig,
    training_config: TrainingConfig,
    out_dir: str | Path,
    *,
    max_steps: int | None = None,
    time_budget_s: float | None = None,
    seed: int = 0,
    precision: str | None = None,
    num_hard_negatives: int = 0,
    patience: int = 5,
    accelerator: str = "cpu",
    devices: int = 1,
    strategy: str = "auto",
    logger: str | None = "csv",
    log_dir: str | Path | None = None,
    progress_bar: bool = True,
    dataset_names: Sequence[str] | Mapping[str, int] = (),
    model: EmbeddingPredictor | None = None,
    y_encoder_path: str | None = None,
    confidence_weight: float = 0.1,
    stratify_validation: bool = False,
    num_threads: int | None = None,
    verbose: bool = True,
    expansion: LinkExpansion | None = None,
    mined_negatives: int = 16,
    query_only: float = 0.0,
) -> TrainResult:
    """Train a predictor on ``train_examples``, validate on ``val_examples``, save the best checkpoint.

    Args:
        train_examples / val_examples: disjoint example lists (``val_examples`` may be empty: no
            validation, the final model is saved).
        corpus: every document the examples name (the validation candidates).
        encoder: the X/Y-Encoder (a ``CachedEncoder`` shares the encoding across runs).
        predictor_config: its ``input_dim`` / ``output_dim`` must equal ``encoder.dim``.
        training_config: hyper-parameters; ``y_encoder_lr_multiplier > 0`` fine-tunes the encoder's
            Hugging Face model (``y_encoder_path`` or the encoder's ``model_path``).
        out_dir: the checkpoint directory (project format); logs go to ``log_dir`` (default
            ``<out_dir>.logs``).
        max_steps / time_budget_s: stop after that many optimiser steps / seconds (else
            ``training_config.num_epochs`` epochs). A single-process run stopped mid-epoch validates
            its final weights too (a multi-process one keeps its last epoch-end validation).
        precision: Lightning precision; None picks it from ``training_config.mixed_precision``.
        dataset_names: the datasets trained on, for the checkpoint's provenance: name → number of
            training examples, or bare names (each then recorded with the total).
        num_hard_negatives: explicit hard negatives per row from ``Example.negative_ids``.
        patience: early-stopping patience in validations without a better ``val_mrr``.
        stratify_validation: macro-average the validation metrics over (dataset, framing) strata
            instead of over examples.
        num_threads: ``torch.set_num_threads`` for the run (1 avoids thrashing on a shared, busy CPU).
        expansion: link expansion (``training.link_expansion``) applied to the train and validation
            sets; ``predictor_config.link_candidates`` must equal its ``max_candidates``. Its hard
            negatives (non-gold candidates + ``mined_negatives`` top-ranked non-gold rows) replace
            the examples' own; with ``num_hard_negatives = 0`` nothing reads them, so none are mined.
        query_only: probability that a training row sees the query as its only context turn (no
            history, no links), as an unlinked question does at serving time.
    """
    out = Path(out_dir)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    L.seed_everything(seed, workers=True)
    if not 0.0 <= query_only <= 1.0:
        raise PrimeError(f"query_only is a probability in [0, 1]; got {query_only}")
    if encoder.dim not in (predictor_config.input_dim,) or encoder.dim != predictor_config.output_dim:
        raise PrimeError(f"encoder {encoder.name!r} has dim {encoder.dim}; the predictor expects "
                         f"input_dim={predictor_config.input_dim}, output_dim={predictor_config.output_dim}")
    n_links = predictor_config.link_candidates
    given = None if expansion is None else (expansion.max_candidates, expansion.seeds)
    wanted = None if n_links == 0 else (n_links, predictor_config.link_seeds)
    if given != wanted:
        raise PrimeError(f"predictor_config asks for link expansion (link_candidates, link_seeds) = {wanted}; "
                         f"the expansion given has {given}: they must agree")
    train_set, val_set, enc_corpus = build_training_sets(
        train_examples, val_examples, corpus, encoder, max_context_length=predictor_config.max_context_length - n_links,
        stratify_validation=stratify_validation)
    if expansion is not None:
        from training.link_expansion import expand_training_set

        mined = mined_negatives if num_hard_negatives > 0 else 0  # negatives are only read with K > 0
        scopes = [corpus[i].scope for i in train_set.corpus_ids]
        train_set = expand_training_set(train_set, train_examples, expansion, mined_negatives=mined, scopes=scopes)
        if val_set is not None:
            val_set = expand_training_set(val_set, val_examples, expansion, mined_negatives=mined,
                                          scopes=[corpus[i].scope for i in val_set.corpus_ids])
    bs = training_config.batch_size
    steps_per_epoch = max(len(train_set) // (bs * devices), 1)
    # max_steps, when given, overrides num_epochs; otherwise num_epochs bounds the run
    total = max_steps if max_steps is not None else steps_per_epoch * training_config.num_epochs
    y_encoder: TrainableYEncoder | None = None
    corpus_texts: list[str] | None = None
    if training_config.y_encoder_lr_multiplier > 0:
        path = y_encoder_path or _y_encoder_path(encoder)
        if path is None:
            raise PrimeError("y_encoder_lr_multiplier > 0 needs a Hugging Face Y-Encoder: pass y_encoder_path")
        y_encoder = TrainableYEncoder(path)
        corpus_texts = [corpus[i].encoding_text for i in enc_corpus.ids]
    module = PredictorModule(
        predictor_config, training_config, total_steps=total, val_set=val_set,
        num_hard_negatives=num_hard_negatives, confidence_weight=confidence_weight,
        y_encoder=y_encoder, corpus_texts=corpus_texts, model=model,
    )
    initial: dict[str, float] = {}
    baseline: dict[str, float] = {}
    if val_set is not None:
        initial = evaluate_retrieval(module.model, val_set)
        if val_set.query.shape[1] == val_set.corpus.shape[1]:
            baseline = evaluate_retrieval(None, val_set)
            module.baseline = baseline
    train_loader = DataLoader(index_dataset(train_set), batch_size=bs, shuffle=True,
                              drop_last=len(train_set) >= bs * devices,
                              collate_fn=_TrainCollator(train_set, num_hard_negatives, query_only))
    val_loader = (DataLoader(index_dataset(val_set), batch_size=256, shuffle=False,
                             collate_fn=_EvalCollator(val_set)) if val_set is not None else None)
    # provenance: each dataset's own training-example count, or (a bare list of names) the total
    sizes = dict(dataset_names) if isinstance(dataset_names, Mapping) else dict.fromkeys(dataset_names,
                                                                                          len(train_examples))
    ckpt_cb = BestCheckpoint(out, encoder=EncoderInfo(name=encoder.name, dim=encoder.dim),
                             datasets=[DatasetInfo(name=n[:200], n_examples=k) for n, k in sizes.items()])
    if initial:
        ckpt_cb.seed(module, {f"val_{k}": v for k, v in initial.items()})
    thr = _Throughput()
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    callbacks: list[Callback] = [ckpt_cb, thr, _ReleaseProcessGroup(owned=owns_group)]
    timer = Timer(dt.timedelta(seconds=time_budget_s), interval="step") if time_budget_s is not None else None
    if timer is not None:
        callbacks.append(timer)
    if val_set is not None and patience > 0:
        callbacks.append(EarlyStopping(monitor="val_mrr", mode="max", patience=patience, strict=False))
    logs = Path(log_dir) if log_dir is not None else out.with_name(out.name + ".logs")
    pl_logger: Any = False
    if logger == "wandb":
        try:
            from lightning.pytorch.loggers import WandbLogger

            pl_logger = WandbLogger(save_dir=str(logs), project="prime-retriever")
        except (ImportError, ModuleNotFoundError):
            warnings.warn("wandb is not installed: logging to CSV instead", stacklevel=2)
            logger = "csv"
    if logger == "csv":
        from lightning.pytorch.loggers import CSVLogger

        pl_logger = CSVLogger(save_dir=str(logs), name="train")
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, strategy=strategy,
        precision=resolve_precision(training_config, accelerator, precision),  # type: ignore[arg-type]
        max_epochs=training_config.num_epochs if max_steps is None else -1,
        max_steps=max_steps if max_steps is not None else -1,
        callbacks=callbacks, logger=pl_logger, enable_progress_bar=progress_bar,
        enable_checkpointing=False, num_sanity_val_steps=0, deterministic=True,
        log_every_n_steps=min(10, steps_per_epoch), enable_model_summary=verbose,
        limit_val_batches=1.0 if val_loader is not None else 0,
    )
    trainer.fit(module, train_loader, val_loader)
    reason = stop_reason(trainer, timer, max_steps=max_steps, max_epochs=training_config.num_epochs)
    if trainer.global_step == 0 and not ckpt_cb.saved:
        # stopped before its first step (a spent time budget): Lightning then skips on_train_end, which keeps
        # a run without validation's last (here: untrained) model, so run that rule here
        ckpt_cb.on_train_end(trainer, module)
    if (val_set is not None and trainer.world_size == 1 and trainer.global_step > 0
            and (not module.history or module.history[-1]["step"] != trainer.global_step)):
        # max_steps / time_budget_s stopped mid-epoch: validate the final weights too, so the steps
        # since the last validation are a candidate for the best checkpoint, not silently dropped
        scores = evaluate_retrieval(module.model, val_set, module.validation_corpus())
        final = {f"val_{k}": v for k, v in scores.items()}
        module.history.append({"step": float(trainer.global_step), **final})
        ckpt_cb.offer(final[ckpt_cb.monitor], final, trainer, module)
    calibration = None
    if val_set is not None and trainer.is_global_zero and y_encoder is None and (out / "meta.json").exists():
        calibration = calibrate_checkpoint(out, val_set)
    tail = thr.losses[-max(steps_per_epoch, 1):]
    final_loss = sum(tail) / len(tail) if tail else float("nan")
    return TrainResult(
        checkpoint_path=out if ckpt_cb.saved or (out / "meta.json").exists() else None,
        best_metrics=dict(ckpt_cb.best_metrics),
        initial_metrics=initial,
        baseline_metrics=baseline,
        final_train_loss=final_loss,
        samples_per_second=thr.samples / thr.seconds if thr.seconds > 0 else 0.0,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        train_seconds=thr.seconds,
        history=list(module.history),
        stop_reason=reason,
        score_confidence=calibration,
    )


def calibrate_checkpoint(path: Path, val_set: TrainingSet) -> ScoreConfidence | None:
    """Fit the search-score confidence of the checkpoint at ``path`` on ``val_set`` and save it there.

    The kept (best) weights predict every validation row; the two best scores over the validation
    corpus and whether the best is gold fit :class:`ScoreConfidence`. ``None`` (and the checkpoint
    unchanged) when fewer than 2 rows have a finite top score.
    """
    loaded = load_checkpoint(path)
    s1, s2, hit = top_two_scores(loaded.model, val_set)
    keep = torch.isfinite(s1)
    if int(keep.sum()) < 2:
        return None
    s1, s2, hit = s1[keep], s2[keep], hit[keep]
    s2 = torch.where(torch.isfinite(s2), s2, s1)  # one candidate left: margin 0, as the retriever reads it
    calibration = ScoreConfidence.fit(s1.numpy(), s2.numpy(), hit.numpy())
    attach_score_confidence(loaded, calibration)
    return calibration


# ---------------------------------------------------------------------------------------------- CLI
_PREDICTOR_FLAGS = ("hidden_dim", "num_layers", "num_heads", "dropout", "max_context_length", "residual",
                    "input_mixing", "attention_layout", "block_type", "link_candidates", "link_seeds")


def parse_bool(s: str) -> bool:
    """An argparse type for BOOL flags: 1/true/yes/on or 0/false/no/off; anything else is refused."""
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def _add_model_flags(parser: argparse.ArgumentParser, model: type[Any], names: Sequence[str] | None,
                     title: str) -> None:
    group = parser.add_argument_group(title)
    for name, info in model.model_fields.items():
        if names is not None and name not in names:
            continue
        flag = "--" + name.replace("_", "-")
        ann = info.annotation
        kind: Any = parse_bool if ann is bool else int if ann is int else float if ann is float else str
        extra: dict[str, Any] = {}
        if name == "attention_layout":
            extra["choices"] = ["bidirectional", "prefix"]
        if name == "block_type":
            extra["choices"] = ["standard", "llama"]
        default = info.default
        if name == "y_encoder_lr_multiplier":
            default = 0.0
        group.add_argument(flag, type=kind, default=None, metavar=name.upper() if kind is not parse_bool else "BOOL",
                           help=f"{info.description or name} (default: {default})", **extra)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prime-retriever train``."""
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE",
                        help="dataset files (any format training.data detects; HotpotQA files are pooled)")
    parser.add_argument("--framing", default="first_hop", choices=["first_hop", "multi_hop", "given"])
    parser.add_argument("--out", required=True, metavar="CKPT", help="checkpoint directory to write")
    parser.add_argument("--config", metavar="FILE", help="JSON/YAML with 'predictor' and/or 'training' sections")
    parser.add_argument("--corpus", metavar="FILE", help="corpus file for generic JSONL data")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share of questions (default 0.1)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this many seconds")
    parser.add_argument("--limit", type=int,
                        help="use only the first N examples (before the split) and only the documents they name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", help="Lightning precision (default: from --mixed-precision)")
    parser.add_argument("--hard-negatives", type=int, default=0, metavar="K",
                        help="explicit hard negatives per row from the examples' negative_ids")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience (validations)")
    parser.add_argument("--links", metavar="FILE",
                        help="title-mention link graph (prime-retriever links) for --link-candidates > 0 "
                             "(default: built from the corpus and written to OUT.links.json)")
    parser.add_argument("--mined-negatives", type=int, default=16, metavar="K",
                        help="with link expansion and --hard-negatives > 0: the query's K top-ranked non-gold "
                             "documents join the hard-negative pool")
    parser.add_argument("--query-only", type=float, default=0.0, metavar="P",
                        help="augmentation: each training row, with probability P, sees the query as its only "
                             "context turn (no history, no links)")
    parser.add_argument("--encoder", help="X/Y-Encoder model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--cache-dir", help="embedding cache root (default: $PRIME_CACHE_DIR or ~/.cache)")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp, ddp_spawn")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--wandb", action="store_true", help="log to Weights & Biases (if installed)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_model_flags(parser, PredictorConfig, _PREDICTOR_FLAGS, "predictor")
    _add_model_flags(parser, TrainingConfig, None, "training")


def _read_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
        if path.endswith((".yaml", ".yml")):
            import yaml

            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise PrimeError(f"{path}: invalid YAML: {exc}") from exc
        else:
            raw = json.loads(text)
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: invalid JSON or not UTF-8
        raise PrimeError(f"{path}: cannot read the config: {exc}") from exc
    if not isinstance(raw, dict):
        raise PrimeError(f"{path}: expected a mapping")
    for section in ("predictor", "training"):
        if not isinstance(raw.get(section, {}), dict):
            raise PrimeError(f"{path}: {section!r} must be a mapping of settings")
    return raw


def _split_config(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pred = dict(raw.get("predictor", {}))
    train = dict(raw.get("training", {}))
    for k, v in raw.items():
        if k in ("predictor", "training"):
            continue
        if k in PredictorConfig.model_fields:
            pred[k] = v
        elif k in TrainingConfig.model_fields:
            train[k] = v
        else:
            raise PrimeError(f"unknown config key {k!r}")
    return pred, train


def _load_data(paths: Sequence[str], framing: str, corpus_path: str | None) -> Any:
    from training.data import load_dataset, load_hotpotqa_pool, merge_datasets
    from training.data.registry import detect
    from training.data.splits import dedupe_examples

    hotpot = [p for p in paths if detect(p) == "hotpotqa" and not Path(p).name.startswith("ecm_")]
    others = [p for p in paths if p not in hotpot]
    datasets = []
    if hotpot:
        datasets.append(load_hotpotqa_pool(hotpot, framing))
    for p in others:
        datasets.append(load_dataset(p, framing, corpus_path=corpus_path))
    ds = datasets[0] if len(datasets) == 1 else merge_datasets("+".join(d.name for d in datasets), datasets)
    if len(datasets) > 1:
        ds.examples = dedupe_examples(ds.examples)
    return ds


def _expansion(config: PredictorConfig, corpus: Mapping[str, Document], links: str | None,
               out: str) -> LinkExpansion | None:
    """The link expansion ``config`` asks for: the graph from ``links``, or built from the corpus and saved."""
    if config.link_candidates == 0:
        return None
    if links is not None:
        graph = LinkGraph.load(links)
    else:
        graph = LinkGraph.build(corpus.values(), show_progress=True)
        path = graph.save(Path(str(out).rstrip("/") + ".links.json"))
        print(f"link graph: {len(graph)} documents link to others, {graph.num_links} links -> {path} "
              "(serve with PredictiveRetriever.from_config(..., links=that file))", flush=True)
    return LinkExpansion.for_config(config, graph)


def run_cli(args: argparse.Namespace) -> int:
    """``prime-retriever train``: load, split, encode, train, print the figures."""
    from prime_retriever.embedding_cache import CachedEncoder, EmbeddingCache
    from prime_retriever.encoders import HFTextEncoder
    from training.data import assert_disjoint, split_examples

    pred_cfg, train_cfg = _split_config(_read_config(args.config))
    for name in PredictorConfig.model_fields:
        if name in _PREDICTOR_FLAGS and getattr(args, name, None) is not None:
            pred_cfg[name] = getattr(args, name)
    for name in TrainingConfig.model_fields:
        if getattr(args, name, None) is not None:
            train_cfg[name] = getattr(args, name)
    train_cfg.setdefault("y_encoder_lr_multiplier", 0.0)

    ds = _load_data(args.data, args.framing, args.corpus)
    examples = list(ds.examples)
    corpus = ds.corpus
    if args.limit is not None:
        examples = examples[: args.limit]
        named = {d for e in examples for d in (*e.positive_ids, *e.negative_ids, *e.exclude_ids)}
        corpus = {k: v for k, v in ds.corpus.items() if k in named}
    train_ex, val_ex = split_examples(examples, args.eval_fraction, salt=str(args.seed))
    assert_disjoint(train_ex, val_ex)
    encoder_inner = HFTextEncoder(args.encoder)
    encoder = CachedEncoder(encoder_inner, EmbeddingCache(args.cache_dir) if args.cache_dir else None)
    pred_cfg.setdefault("input_dim", encoder.dim)
    pred_cfg.setdefault("output_dim", encoder.dim)
    pcfg = PredictorConfig(**pred_cfg)
    tcfg = TrainingConfig(**train_cfg)
    print(f"data: {ds.name}: {len(train_ex)} train / {len(val_ex)} held-out examples ({args.framing}), "
          f"corpus {len(corpus)} documents", flush=True)
    print(f"predictor: {pcfg.model_dump_json()}", flush=True)
    print(f"training: {tcfg.model_dump_json()}", flush=True)
    expansion = _expansion(pcfg, corpus, args.links, args.out)
    res = train_predictor(
        train_ex, val_ex, corpus, encoder, pcfg, tcfg, args.out,
        max_steps=args.max_steps, time_budget_s=args.time_budget, seed=args.seed, precision=args.precision,
        num_hard_negatives=args.hard_negatives, patience=args.patience, accelerator=args.accelerator,
        devices=args.devices, strategy=args.strategy, logger="wandb" if args.wandb else "csv",
        progress_bar=not args.no_progress, dataset_names=[ds.name], num_threads=args.threads,
        expansion=expansion, mined_negatives=args.mined_negatives, query_only=args.query_only,
    )
    print()
    print(f"steps: {res.steps} ({res.epochs} epochs, stopped by {res.stop_reason}), checkpoint: {res.checkpoint_path}")
    if res.stop_reason == "time_budget":
        print(time_budget_warning(args.time_budget, "--time-budget"), flush=True)
    print(f"final InfoNCE loss: {res.final_train_loss:.4f}")
    print(f"training throughput: {res.samples_per_second:.1f} samples/s")
    if res.best_metrics:
        b, i, q = res.best_metrics, res.initial_metrics, res.baseline_metrics
        print(f"validation on {len(val_ex)} held-out questions (corpus {len(corpus)} documents):")
        nan = float("nan")
        print(f"  predictor (best): R@10 {b.get('val_r@10', nan):.4f}  MRR {b.get('val_mrr', nan):.4f}")
        if q:
            print(f"  query-embedding baseline: R@10 {q['r@10']:.4f}  MRR {q['mrr']:.4f}")
        if i:
            print(f"  untrained predictor: R@10 {i['r@10']:.4f}  MRR {i['mrr']:.4f}")
    if res.score_confidence is not None:
        print(f"search-score confidence: {res.score_confidence.describe()}")
    else:  # searches then report the predictor's confidence head
        why = ("the Y-Encoder was fine-tuned: re-index the corpus first" if tcfg.y_encoder_lr_multiplier > 0
               else "it needs at least 2 validation questions")
        print(f"search-score confidence: not fitted ({why})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from prime_retriever.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
