"""Lightning callbacks of a training run: keep the best checkpoint, measure throughput, release the process group."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from prime_retriever.model.checkpoint import DatasetInfo, EncoderInfo, Provenance, save_checkpoint
from training.module import PredictorModule

__all__ = ["Y_ENCODER_DIR", "BestCheckpoint", "ReleaseProcessGroup", "Throughput"]

#: where a fine-tuned Y-Encoder is saved, inside the checkpoint directory
Y_ENCODER_DIR = "y_encoder"


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


class Throughput(Callback):
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


class ReleaseProcessGroup(Callback):
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
