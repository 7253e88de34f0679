"""Train a predictor: :func:`train_predictor` (the command line is :mod:`prime_retriever.cli.train`).

:func:`train_predictor` encodes the corpus and the examples once (pass a ``CachedEncoder`` to share
the work across runs), builds a :class:`~training.module.PredictorModule` and runs a Lightning
``Trainer``: mixed precision (``bf16-mixed`` on CPU, ``16-mixed`` on CUDA when
``TrainingConfig.mixed_precision``), validation every epoch, the best checkpoint (by ``val_mrr``)
saved in the project's own format (:func:`prime_retriever.model.checkpoint.save_checkpoint`), early
stopping on ``val_mrr``, a CSV logger (W&B on request), a progress bar and deterministic seeds.
Multi-process training uses Lightning's DDP strategies (``strategy="ddp"`` / ``"ddp_spawn"``).
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from torch.utils.data import DataLoader

from prime_retriever.errors import PrimeError
from prime_retriever.model.checkpoint import (
    DatasetInfo,
    EncoderInfo,
)
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.score_confidence import ScoreConfidence
from prime_retriever.text.documents import Document
from training.calibration import calibrate_checkpoint
from training.callbacks import BestCheckpoint, ReleaseProcessGroup, Throughput
from training.data.encoded import TextEncoderLike
from training.data.examples import Example
from training.module import PredictorModule, TrainableYEncoder, evaluate_retrieval
from training.train_options import TrainOptions
from training.training_config import TrainingConfig
from training.training_set import (
    Batch,
    TrainingSet,
    build_training_sets,
    collate_eval_batch,
    collate_training_batch,
    index_dataset,
)

__all__ = ["TrainOptions", "TrainResult", "resolve_precision", "stop_reason", "time_budget_warning", "train_predictor"]



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
    return (f"warning: the wall-clock safety net ({budget_s:g} s, {flag}) ended training before its epochs or early "
            "stopping did: these numbers depend on the machine's speed (a faster or idler machine trains further "
            "from the same seed); rerun on a quieter machine or raise the limit")


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
    options: TrainOptions | None = None,
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
    opts = options if options is not None else TrainOptions()
    out = Path(out_dir)
    if opts.num_threads is not None:
        torch.set_num_threads(opts.num_threads)
    L.seed_everything(opts.seed, workers=True)
    if not 0.0 <= opts.query_only <= 1.0:
        raise PrimeError(f"query_only is a probability in [0, 1]; got {opts.query_only}")
    if encoder.dim not in (predictor_config.input_dim,) or encoder.dim != predictor_config.output_dim:
        raise PrimeError(f"encoder {encoder.name!r} has dim {encoder.dim}; the predictor expects "
                         f"input_dim={predictor_config.input_dim}, output_dim={predictor_config.output_dim}")
    n_links = predictor_config.link_candidates
    given = None if opts.expansion is None else (opts.expansion.max_candidates, opts.expansion.seeds)
    wanted = None if n_links == 0 else (n_links, predictor_config.link_seeds)
    if given != wanted:
        raise PrimeError(f"predictor_config asks for link expansion (link_candidates, link_seeds) = {wanted}; "
                         f"the expansion given has {given}: they must agree")
    train_set, val_set, enc_corpus = build_training_sets(
        train_examples, val_examples, corpus, encoder, max_context_length=predictor_config.max_context_length - n_links,
        stratify_validation=opts.stratify_validation)
    if opts.expansion is not None:
        from training.link_expansion import expand_training_set

        mined = opts.mined_negatives if opts.num_hard_negatives > 0 else 0  # negatives are only read with K > 0
        scopes = [corpus[i].scope for i in train_set.corpus_ids]
        train_set = expand_training_set(train_set, train_examples, opts.expansion, mined_negatives=mined, scopes=scopes)
        if val_set is not None:
            val_set = expand_training_set(val_set, val_examples, opts.expansion, mined_negatives=mined,
                                          scopes=[corpus[i].scope for i in val_set.corpus_ids])
    bs = training_config.batch_size
    steps_per_epoch = max(len(train_set) // (bs * opts.devices), 1)
    # opts.max_steps, when given, overrides num_epochs; otherwise num_epochs bounds the run
    total = opts.max_steps if opts.max_steps is not None else steps_per_epoch * training_config.num_epochs
    y_encoder: TrainableYEncoder | None = None
    corpus_texts: list[str] | None = None
    if training_config.y_encoder_lr_multiplier > 0:
        path = opts.y_encoder_path or _y_encoder_path(encoder)
        if path is None:
            raise PrimeError("y_encoder_lr_multiplier > 0 needs a Hugging Face Y-Encoder: pass y_encoder_path")
        y_encoder = TrainableYEncoder(path)
        corpus_texts = [corpus[i].encoding_text for i in enc_corpus.ids]
    module = PredictorModule(
        predictor_config, training_config, total_steps=total, val_set=val_set,
        num_hard_negatives=opts.num_hard_negatives, confidence_weight=opts.confidence_weight,
        y_encoder=y_encoder, corpus_texts=corpus_texts, model=opts.model,
    )
    initial: dict[str, float] = {}
    baseline: dict[str, float] = {}
    if val_set is not None:
        initial = evaluate_retrieval(module.model, val_set)
        if val_set.query.shape[1] == val_set.corpus.shape[1]:
            baseline = evaluate_retrieval(None, val_set)
            module.baseline = baseline
    train_loader = DataLoader(index_dataset(train_set), batch_size=bs, shuffle=True,
                              drop_last=len(train_set) >= bs * opts.devices,
                              collate_fn=_TrainCollator(train_set, opts.num_hard_negatives, opts.query_only))
    val_loader = (DataLoader(index_dataset(val_set), batch_size=256, shuffle=False,
                             collate_fn=_EvalCollator(val_set)) if val_set is not None else None)
    # provenance: each dataset's own training-example count, or (a bare list of names) the total
    sizes = dict(opts.dataset_names) if isinstance(opts.dataset_names, Mapping) else dict.fromkeys(opts.dataset_names,
                                                                                          len(train_examples))
    ckpt_cb = BestCheckpoint(out, encoder=EncoderInfo(name=encoder.name, dim=encoder.dim),
                             datasets=[DatasetInfo(name=n[:200], n_examples=k) for n, k in sizes.items()])
    if initial:
        ckpt_cb.seed(module, {f"val_{k}": v for k, v in initial.items()})
    thr = Throughput()
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    callbacks: list[Callback] = [ckpt_cb, thr, ReleaseProcessGroup(owned=owns_group)]
    timer = (Timer(dt.timedelta(seconds=opts.time_budget_s), interval="step")
             if opts.time_budget_s is not None else None)
    if timer is not None:
        callbacks.append(timer)
    if val_set is not None and opts.patience > 0:
        callbacks.append(EarlyStopping(monitor="val_mrr", mode="max", patience=opts.patience, strict=False))
    logs = Path(opts.log_dir) if opts.log_dir is not None else out.with_name(out.name + ".logs")
    pl_logger: Any = False
    logger = opts.logger
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
        accelerator=opts.accelerator, devices=opts.devices, strategy=opts.strategy,
        precision=resolve_precision(training_config, opts.accelerator, opts.precision),  # type: ignore[arg-type]
        max_epochs=training_config.num_epochs if opts.max_steps is None else -1,
        max_steps=opts.max_steps if opts.max_steps is not None else -1,
        callbacks=callbacks, logger=pl_logger, enable_progress_bar=opts.progress_bar,
        enable_checkpointing=False, num_sanity_val_steps=0, deterministic=True,
        log_every_n_steps=min(10, steps_per_epoch), enable_model_summary=opts.verbose,
        limit_val_batches=1.0 if val_loader is not None else 0,
    )
    trainer.fit(module, train_loader, val_loader)
    reason = stop_reason(trainer, timer, max_steps=opts.max_steps, max_epochs=training_config.num_epochs)
    if trainer.global_step == 0 and not ckpt_cb.saved:
        # stopped before its first step (a spent time budget): Lightning then skips on_train_end, which keeps
        # a run without validation's last (here: untrained) opts.model, so run that rule here
        ckpt_cb.on_train_end(trainer, module)
    if (val_set is not None and trainer.world_size == 1 and trainer.global_step > 0
            and (not module.history or module.history[-1]["step"] != trainer.global_step)):
        # opts.max_steps / opts.time_budget_s stopped mid-epoch: validate the final weights too, so the steps
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


