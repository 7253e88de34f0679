"""A small random-init residual predictor: the query-embedding baseline, or a perturbed one for tests."""

from __future__ import annotations

from typing import Any

import torch

from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

__all__ = ["random_predictor"]


def random_predictor(dim: int = 384, *, seed: int = 0, perturb: float = 0.0, **overrides: Any) -> EmbeddingPredictor:
    """A small random-init **residual** predictor (output = normalize(query + delta)).

    At init ``delta`` is exactly 0, so it reproduces the query-embedding baseline; ``perturb > 0``
    re-initialises the output projection with that standard deviation so the prediction moves
    away from the query (useful to exercise the predicted path in benchmarks and tests).
    """
    params: dict[str, Any] = {
        "input_dim": dim, "output_dim": dim, "hidden_dim": 128, "num_layers": 2, "num_heads": 4,
        "max_context_length": 8, "dropout": 0.0, "residual": True, "use_torch_compile": False,
    }
    params.update(overrides)
    torch.manual_seed(seed)
    model = EmbeddingPredictor(PredictorConfig(**params))
    if perturb > 0:
        torch.nn.init.normal_(model.output_proj.weight, std=perturb)
    return model.eval()
