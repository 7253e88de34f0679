"""The options of :func:`training.trainer.train_predictor` beyond the data, the encoder and the two configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.retrieval.link_graph import LinkExpansion

__all__ = ["TrainOptions"]


@dataclass
class TrainOptions:
    """How one training run is bounded, logged and fed (see :func:`~training.trainer.train_predictor`)."""

    max_steps: int | None = None
    time_budget_s: float | None = None
    seed: int = 0
    precision: str | None = None
    num_hard_negatives: int = 0
    patience: int = 5
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    logger: str | None = "csv"
    log_dir: str | Path | None = None
    progress_bar: bool = True
    dataset_names: Sequence[str] | Mapping[str, int] = ()
    model: EmbeddingPredictor | None = None
    y_encoder_path: str | None = None
    confidence_weight: float = 0.1
    stratify_validation: bool = False
    num_threads: int | None = None
    verbose: bool = True
    expansion: LinkExpansion | None = None
    mined_negatives: int = 16
    query_only: float = 0.0
