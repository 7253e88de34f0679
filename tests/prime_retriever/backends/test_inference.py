"""The eager backend: the PredictorBackend protocol on the plain torch forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prime_retriever.backends.inference import EagerPredictor, PredictorBackend
from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

CFG = PredictorConfig(input_dim=16, output_dim=16, hidden_dim=32, num_layers=1, num_heads=4,
                      max_context_length=4, dropout=0.0, use_torch_compile=False)


def _backend() -> EagerPredictor:
    torch.manual_seed(0)
    return EagerPredictor(EmbeddingPredictor(CFG))


def test_eager_is_a_backend_with_the_configs_dims() -> None:
    b = _backend()
    assert isinstance(b, PredictorBackend)
    assert (b.input_dim, b.output_dim, b.max_context_length) == (16, 16, 4)


def test_predict_gives_unit_rows_equal_to_the_torch_forward() -> None:
    b = _backend()
    rng = np.random.default_rng(0)
    ctx = rng.standard_normal((3, 4, 16)).astype(np.float32)  # B × N × D
    q = rng.standard_normal((3, 16)).astype(np.float32)  # B × D
    mask = np.array([[True] * 4, [True, True, False, False], [True, False, False, False]])  # B × N
    emb, conf = b.predict(ctx, q, mask)
    assert emb.shape == (3, 16) and conf.shape == (3,) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert ((conf >= 0) & (conf <= 1)).all()
    with torch.inference_mode():
        ref = b.model.predict(torch.from_numpy(ctx), torch.from_numpy(q), torch.from_numpy(mask)).embedding
    np.testing.assert_allclose(emb, ref.numpy(), atol=1e-6)
    # a padded turn changes nothing: row 2 with its padding cut off gives the same embedding
    short, _ = b.predict(ctx[2:, :1], q[2:])
    np.testing.assert_allclose(short[0], emb[2], atol=1e-5)


@pytest.mark.parametrize("mask", [np.ones((1, 4), np.float32), np.array([["True"] * 4]), np.ones((1, 4), int)])
def test_a_mask_that_is_not_boolean_is_refused_not_cast(mask: np.ndarray) -> None:
    ctx = np.ones((1, 4, 16), np.float32)
    with pytest.raises(PredictorError, match="bool"):
        _backend().predict(ctx, ctx[:, 0], mask)


def test_non_numeric_input_is_a_predictor_error() -> None:
    with pytest.raises(PredictorError, match="numeric"):
        _backend().predict(np.array([[["a"] * 16]]), np.ones((1, 16), np.float32))


def test_warmup_runs() -> None:
    _backend().warmup()
