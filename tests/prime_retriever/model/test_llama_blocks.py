"""Llama decoder layers as bidirectional predictor blocks, on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prime_retriever.errors import PredictorError
from prime_retriever.model.checkpoint import load_checkpoint, save_checkpoint
from prime_retriever.model.llama_blocks import (
    LlamaBlock,
    init_from_llama,
    llama_config_dict,
    predictor_config_from_llama,
)
from prime_retriever.model.predictor import EmbeddingPredictor

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=6,
        vocab_size=32,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("llama")
    LlamaModel(cfg).save_pretrained(path)
    return path


def _model(path: Path, layers: tuple[int, int] = (2, 4)) -> EmbeddingPredictor:
    cfg = predictor_config_from_llama(path, input_dim=16, output_dim=16, layers=layers, use_torch_compile=False)
    model = EmbeddingPredictor(cfg)
    init_from_llama(model, str(path), layers=layers)
    return model


def test_weights_really_copy(tiny_llama: Path) -> None:
    from safetensors.torch import load_file
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    model = _model(tiny_llama)
    src = load_file(str(next(tiny_llama.glob("*.safetensors"))))
    prefix = "model." if any(k.startswith("model.") for k in src) else ""
    assert model.config.num_layers == 2 and model.config.hidden_dim == 64
    for i, block in enumerate(model.layers):
        assert isinstance(block, LlamaBlock)
        for name, param in block.layer.state_dict().items():
            assert torch.equal(param, src[f"{prefix}layers.{2 + i}.{name}"]), name
    # GQA: 2 kv heads of 16 dims
    first = model.layers[0]
    assert isinstance(first, LlamaBlock) and isinstance(first.layer, LlamaDecoderLayer)
    assert first.layer.self_attn.k_proj.weight.shape == (32, 64)


def test_output_is_bidirectional(tiny_llama: Path) -> None:
    torch.manual_seed(1)
    model = _model(tiny_llama).eval()
    ctx = torch.randn(1, 3, 16)
    query = torch.randn(1, 16)
    base = model(ctx, query)
    # the query is the LAST token: a causal model's [PRED] (first token) could not see it
    changed_query = model(ctx, query + 1.0)
    assert not torch.allclose(base, changed_query)
    changed_ctx = ctx.clone()
    changed_ctx[0, 2] += 1.0
    assert not torch.allclose(base, model(changed_ctx, query))


def test_padding_is_masked(tiny_llama: Path) -> None:
    torch.manual_seed(2)
    model = _model(tiny_llama).eval()
    ctx = torch.randn(1, 3, 16)
    query = torch.randn(1, 16)
    mask = torch.tensor([[True, True, False]])
    a = model(ctx, query, mask)
    ctx2 = ctx.clone()
    ctx2[0, 2] = 100.0  # a padded turn must not matter
    assert torch.allclose(a, model(ctx2, query, mask), atol=1e-5)


def test_forward_backward_and_checkpointing(tiny_llama: Path) -> None:
    model = _model(tiny_llama).train()
    model.gradient_checkpointing = True
    out = model(torch.randn(3, 2, 16), torch.randn(3, 16))
    assert out.shape == (3, 16)
    out.sum().backward()
    grads = [p.grad for p in model.layers.parameters()]
    assert all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


def test_checkpoint_round_trip(tiny_llama: Path, tmp_path: Path) -> None:
    model = _model(tiny_llama).eval()
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt").model
    assert loaded.config.block_type == "llama"
    ctx, query = torch.randn(2, 2, 16), torch.randn(2, 16)
    assert torch.allclose(model(ctx, query), loaded(ctx, query), atol=1e-6)


def test_mismatches_raise_predictor_error(tiny_llama: Path) -> None:
    model = _model(tiny_llama, layers=(0, 2))
    with pytest.raises(PredictorError, match="num_layers"):
        init_from_llama(model, str(tiny_llama), layers=(0, 3))
    cfg = llama_config_dict(tiny_llama)
    cfg["hidden_size"] = 32
    other = predictor_config_from_llama(
        tiny_llama, input_dim=16, output_dim=16, layers=(0, 2), hidden_dim=32, num_heads=4, llama_config=cfg
    )
    with pytest.raises(PredictorError, match="hidden"):
        init_from_llama(EmbeddingPredictor(other), str(tiny_llama), layers=(0, 2))
    with pytest.raises(PredictorError, match="start"):
        predictor_config_from_llama(tiny_llama, input_dim=16, output_dim=16, layers=(4, 9))
