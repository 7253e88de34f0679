"""One interface for every way of running a predictor (eager torch, optimised torch, ONNX).

The retriever talks only to :class:`PredictorBackend`: numpy in, numpy out, so an ONNX
session and a compiled torch graph are interchangeable behind it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor


@runtime_checkable
class PredictorBackend(Protocol):
    """A runnable predictor.

    ``predict`` takes ``context`` (B × N × D float32), ``query`` (B × D float32) and an optional
    ``context_mask`` (B × N bool, True = real turn), and returns ``(embedding B × O float32,
    confidence B float32 in [0, 1])``. Invalid input raises :class:`PredictorError`.
    """

    name: str

    @property
    def input_dim(self) -> int: ...

    @property
    def output_dim(self) -> int: ...

    @property
    def max_context_length(self) -> int: ...

    def predict(
        self, context: np.ndarray, query: np.ndarray, context_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def warmup(self) -> None: ...


def _bool_mask(context_mask: object) -> np.ndarray:
    """A context mask as given, if it is boolean: strings, floats and ints are refused rather than cast
    (``"False"`` and ``0.1`` would both become True)."""
    arr = np.asarray(context_mask)
    if arr.dtype != np.bool_:
        raise PredictorError(f"context_mask must be a bool array; got dtype {arr.dtype}")
    return arr


def as_tensors(
    model: EmbeddingPredictor, context: np.ndarray, query: np.ndarray, context_mask: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """numpy -> tensors on the model's device and dtype; raises PredictorError on bad arrays."""
    try:
        c = torch.as_tensor(np.asarray(context, dtype=np.float32), device=model.device).to(model.dtype)
        q = torch.as_tensor(np.asarray(query, dtype=np.float32), device=model.device).to(model.dtype)
        m = None if context_mask is None else torch.as_tensor(_bool_mask(context_mask), device=model.device)
    except (TypeError, ValueError) as e:
        raise PredictorError(f"inputs are not numeric arrays: {e}") from e
    return c, q, m


class ConfigDims:
    """The :class:`PredictorBackend` dimension properties, read from ``self.config``."""

    config: PredictorConfig

    @property
    def input_dim(self) -> int:
        return self.config.input_dim

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def max_context_length(self) -> int:
        return self.config.max_context_length


class EagerPredictor(ConfigDims):
    """The plain torch forward, in inference mode."""

    name = "eager"

    def __init__(self, model: EmbeddingPredictor) -> None:
        self.model = model.eval()
        self.config = model.config

    def predict(
        self, context: np.ndarray, query: np.ndarray, context_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        c, q, m = as_tensors(self.model, context, query, context_mask)
        with torch.inference_mode():
            emb, conf = self.model.predict_with_confidence(c, q, m)  # B × O, B
        return emb.float().cpu().numpy(), conf.float().cpu().numpy()

    def warmup(self) -> None:
        cfg = self.model.config
        ctx = np.zeros((1, 1, cfg.input_dim), np.float32)
        ctx[0, 0, 0] = 1.0
        self.predict(ctx, ctx[:, 0])
