from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor, PredictorTransformerBlock

D = 48


def small_config(**kw: object) -> PredictorConfig:
    base: dict[str, object] = {
        "input_dim": D,
        "output_dim": D,
        "hidden_dim": 64,
        "num_layers": 2,
        "num_heads": 4,
        "max_context_length": 6,
    }
    base.update(kw)
    return PredictorConfig(**base)


def model(**kw: object) -> EmbeddingPredictor:
    torch.manual_seed(0)
    return EmbeddingPredictor(small_config(**kw)).eval()


def inputs(B: int = 3, N: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, D, generator=g), torch.randn(B, D, generator=g)


def test_forward_pass_shape() -> None:
    m = model()
    ctx, q = inputs(B=5, N=3)
    assert m(ctx, q).shape == (5, D)
    m2 = EmbeddingPredictor(small_config(output_dim=32)).eval()
    assert m2(ctx, q).shape == (5, 32)


def test_default_config_parameter_count() -> None:
    n = EmbeddingPredictor(PredictorConfig()).num_parameters()
    assert 200e6 < n < 215e6  # ~208M with the spec's default dims


def test_output_normalized() -> None:
    m = model()
    ctx, q = inputs(B=16, N=6)
    norms = m(ctx * 100, q * 1e-3).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(16), atol=1e-5, rtol=0)


def test_gradient_flow() -> None:
    torch.manual_seed(0)
    m = EmbeddingPredictor(small_config(dropout=0.1)).train()
    ctx, q = inputs(B=8, N=6)  # N = max_context_length: every turn position is used
    out = m.predict(ctx, q)
    target = F.normalize(torch.randn(8, D), dim=-1)
    loss = -(out.embedding * target).sum() + F.binary_cross_entropy_with_logits(out.confidence_logit, torch.ones(8))
    loss.backward()  # type: ignore[no-untyped-call]
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_batch_inference() -> None:
    m = model()
    ctx, q = inputs(B=7, N=5)
    batched = m(ctx, q)
    single = torch.cat([m(ctx[i : i + 1], q[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["bidirectional", "prefix"])
def test_padded_turns_do_not_change_output(layout: str) -> None:
    m = model(attention_layout=layout)
    ctx, q = inputs(B=3, N=6)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    ctx = ctx.masked_fill(~mask[..., None], 7.0)  # garbage in padded slots
    out = m(ctx, q, mask)
    for i, n in enumerate(mask.sum(1).tolist()):
        alone = m(ctx[i : i + 1, :n], q[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=0)


def test_turn_order_matters() -> None:
    m = model()
    ctx, q = inputs(B=1, N=3)
    assert not torch.allclose(m(ctx, q), m(ctx.flip(1), q), atol=1e-4)


def test_prefix_context_kv_cache_matches_full_forward() -> None:
    m = model(attention_layout="prefix")
    ctx, q = inputs(B=4, N=5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[0, 3:] = False
    full = m(ctx, q, mask)
    kv = m.encode_context(ctx, mask)
    assert kv.keys.shape == (2, 4, 4, 5, 16)
    cached = m.predict_from_context(kv, q).embedding
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


def test_kv_cache_requires_prefix_layout() -> None:
    ctx, _ = inputs(B=2, N=3)
    with pytest.raises(PredictorError, match="attention_layout='prefix'"):
        model().encode_context(ctx)


def test_residual_starts_at_query_baseline() -> None:
    m = model(residual=True)
    ctx, q = inputs(B=4, N=2)
    torch.testing.assert_close(m(ctx, q), F.normalize(q, dim=-1), atol=1e-6, rtol=0)


def test_confidence_in_unit_interval() -> None:
    m = model()
    torch.nn.init.normal_(m.confidence_head.weight)
    ctx, q = inputs(B=6, N=3)
    emb, conf = m.predict_with_confidence(ctx, q)
    assert emb.shape == (6, D) and conf.shape == (6,)
    assert ((conf >= 0) & (conf <= 1)).all()
    assert conf.std() > 0  # a trained head discriminates; a random one at least varies


def test_gradient_checkpointing_same_gradients() -> None:
    torch.manual_seed(0)
    a = EmbeddingPredictor(small_config(dropout=0.0)).train()
    b = EmbeddingPredictor(small_config(dropout=0.0)).train()
    b.load_state_dict(a.state_dict())
    b.gradient_checkpointing = True
    ctx, q = inputs()
    a(ctx, q).sum().backward()
    b(ctx, q).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_block_is_pre_norm() -> None:
    block = PredictorTransformerBlock(64, 4, 0.0).eval()
    x = torch.randn(2, 5, 64)  # B × L × H
    # pre-norm: both sublayers read a LayerNorm of the stream and add to it, so what a block adds to a
    # large input does not grow with its scale (a post-norm block would renormalise the stream itself)
    with torch.no_grad():
        added = [block(c * x) - c * x for c in (100.0, 1000.0)]
    torch.testing.assert_close(added[0], added[1], atol=1e-2, rtol=1e-2)
    assert float(added[1].norm(dim=-1).max()) < 0.01 * float((1000.0 * x).norm(dim=-1).min())
    assert block.mlp[0].out_features == 256  # GELU MLP ×4


# ----------------------------------------------------------------------------- bad input
def _err(m: EmbeddingPredictor, ctx: object, q: object, mask: object = None) -> str:
    with pytest.raises(PredictorError) as e:
        m(ctx, q, mask)
    return str(e.value)


def test_wrong_input_dim_names_shapes() -> None:
    m = model()
    msg = _err(m, torch.randn(2, 3, 32), torch.randn(2, D))
    assert f"(B, N, {D})" in msg and "(2, 3, 32)" in msg
    msg = _err(m, torch.randn(2, 3, D), torch.randn(2, 10))
    assert f"(B, {D})" in msg and "(2, 10)" in msg
    assert "shape" in _err(m, torch.randn(3, D), torch.randn(2, D))


def test_too_many_turns() -> None:
    assert "max_context_length=6" in _err(model(), torch.randn(1, 7, D), torch.randn(1, D))


def test_empty_context() -> None:
    assert "empty context" in _err(model(), torch.randn(2, 0, D), torch.randn(2, D))
    mask = torch.tensor([[True, False], [False, False]])
    assert "rows [1]" in _err(model(), torch.randn(2, 2, D), torch.randn(2, D), mask)


def test_batch_mismatch() -> None:
    assert "B=2" in _err(model(), torch.randn(2, 3, D), torch.randn(3, D))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite(bad: float) -> None:
    ctx, q = inputs()
    ctx[0, 1, 2] = bad
    assert "NaN or Inf" in _err(model(), ctx, q)
    ctx, q = inputs()
    q[1, 0] = bad
    assert "query_embedding contains NaN or Inf" in _err(model(), ctx, q)


def test_wrong_dtype_and_type() -> None:
    ctx, q = inputs()
    assert "dtype" in _err(model(), ctx.double(), q)
    assert "torch.Tensor" in _err(model(), ctx.tolist(), q)


def test_bad_mask() -> None:
    ctx, q = inputs(B=2, N=3)
    assert "context_mask" in _err(model(), ctx, q, torch.ones(2, 3))
    assert "context_mask" in _err(model(), ctx, q, torch.ones(2, 4, dtype=torch.bool))
    # not a tensor: one typed error naming what it got (a numpy mask was "not on device cpu" before)
    assert "torch.bool tensor of shape (2, 3); got ndarray" in _err(model(), ctx, q, np.ones((2, 3), bool))
    assert "got list" in _err(model(), ctx, q, [[True] * 3] * 2)


@pytest.mark.parametrize("mask", [np.array([["False", "True", "False"]] * 2), np.full((2, 3), 0.1),
                                  np.ones((2, 3), np.int64)])
def test_the_eager_backend_refuses_a_mask_that_is_not_boolean(mask: np.ndarray) -> None:
    from prime_retriever.backends.inference import EagerPredictor

    ctx, q = inputs(B=2, N=3)
    with pytest.raises(PredictorError, match="context_mask must be a bool array"):  # not cast: "False" is True
        EagerPredictor(model()).predict(ctx.numpy(), q.numpy(), mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_wrong_device() -> None:
    ctx, q = inputs()
    assert "device" in _err(model(), ctx.cuda(), q)


def test_input_mixing_starts_at_query_and_learns_a_mixture() -> None:
    m = model(residual=True, input_mixing=True)
    ctx, q = inputs(B=3, N=4)
    torch.testing.assert_close(m(ctx, q), F.normalize(q, dim=-1), atol=1e-6, rtol=0)
    assert m.mix is not None
    torch.nn.init.constant_(m.mix.bias, 0.5)  # every token weighted 0.5: output ∝ q + 0.5 (Σ ctx + q)
    expected = F.normalize(q + 0.5 * (ctx.sum(1) + q), dim=-1)
    torch.testing.assert_close(m(ctx, q), expected, atol=1e-5, rtol=0)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    out = m(ctx, q, mask)
    for i in range(3):
        real = ctx[i][mask[i]]
        torch.testing.assert_close(out[i], F.normalize(q[i] + 0.5 * (real.sum(0) + q[i]), dim=-1), atol=1e-5, rtol=0)


def test_input_mixing_config_rules() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs residual=True"):
        small_config(input_mixing=True)
    with pytest.raises(ValidationError, match="not supported with attention_layout='prefix'"):
        small_config(input_mixing=True, residual=True, attention_layout="prefix")
