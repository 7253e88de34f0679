"""Input checks shared by the numpy backends (ONNX, the fast torch path): one validation for all."""

from __future__ import annotations

from typing import Any

import numpy as np

from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import check_input_shapes, check_mask

__all__ = ["validate_arrays"]


def validate_arrays(
    cfg: PredictorConfig, context: Any, query: Any, context_mask: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check numpy inputs like :meth:`EmbeddingPredictor.validate_inputs`; return float32/bool arrays.

    Returns ``(context B × N × D float32, query B × D float32, mask B × N bool)``; a missing mask
    becomes all True. Raises :class:`PredictorError` naming what was expected and what was received.
    """
    try:
        c = np.asarray(context, dtype=np.float32)  # B × N × D
        q = np.asarray(query, dtype=np.float32)  # B × D
    except (TypeError, ValueError) as e:
        raise PredictorError(f"inputs are not numeric arrays: {e}") from e
    B, N = check_input_shapes(cfg, c.shape, q.shape)
    if context_mask is None:
        m = np.ones((B, N), dtype=bool)  # B × N
    else:
        m = np.asarray(context_mask)
        ok = m.dtype == np.bool_ and m.shape == (B, N)
        check_mask(ok, m.shape, B, N, np.flatnonzero(~m.any(axis=1)).tolist() if ok else [], m.dtype)
    if not np.isfinite(c).all():
        raise PredictorError("context_embeddings contains NaN or Inf")
    if not np.isfinite(q).all():
        raise PredictorError("query_embedding contains NaN or Inf")
    return c, q, m
