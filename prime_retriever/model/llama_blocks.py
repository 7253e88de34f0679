"""Llama decoder layers as bidirectional predictor blocks (BR-PRED-005).

:func:`build_llama_blocks` builds ``transformers``' ``LlamaDecoderLayer`` s (RMSNorm, RoPE,
SwiGLU, grouped-query attention) from ``PredictorConfig.llama_config`` and wraps each so that it
has the predictor's block interface ``forward(x: B × L × H, mask: B × 1 × L × L bool | None)``.
The layers run BIDIRECTIONALLY: causal masking is switched off and the only mask is the
predictor's padding / layout mask. Rotary position embeddings (positions ``0 .. L-1`` of the
sequence ``[PRED] + context + query``) come from ``LlamaRotaryEmbedding``.

:func:`init_from_llama` copies decoder layers ``[start, end)`` of a local Llama checkpoint
(safetensors) into a predictor built with ``block_type="llama"``;
:func:`predictor_config_from_llama` builds such a ``PredictorConfig`` from a checkpoint folder.

Checked against transformers 5.x: ``LlamaDecoderLayer.forward(hidden_states, attention_mask,
position_ids, past_key_values, use_cache, position_embeddings, **kwargs) -> Tensor``;
``attention_mask`` is additive (eager) or bool/additive (SDPA), B × 1 × L × L; with no mask the
SDPA path is causal unless ``is_causal=False``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig

if TYPE_CHECKING:
    from prime_retriever.model.predictor import EmbeddingPredictor

__all__ = [
    "LlamaBlock",
    "build_llama_blocks",
    "init_from_llama",
    "llama_config_dict",
    "predictor_config_from_llama",
]


def _llama_config(config: PredictorConfig) -> Any:
    from transformers import LlamaConfig

    if config.llama_config is None:
        raise PredictorError("block_type='llama' needs PredictorConfig.llama_config")
    raw = dict(config.llama_config)
    raw.setdefault("hidden_size", config.hidden_dim)
    raw.setdefault("num_attention_heads", config.num_heads)
    raw["num_hidden_layers"] = config.num_layers
    cfg = LlamaConfig(**raw)
    if cfg.hidden_size != config.hidden_dim:
        raise PredictorError(
            f"llama_config.hidden_size ({cfg.hidden_size}) must equal PredictorConfig.hidden_dim ({config.hidden_dim})"
        )
    cfg._attn_implementation = "sdpa"
    return cfg


class LlamaBlock(nn.Module):
    """One ``LlamaDecoderLayer`` with the predictor's block interface, run bidirectionally."""

    def __init__(self, layer: nn.Module, rotary: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.layer.self_attn.is_causal = False  # type: ignore[union-attr]
        # shared, non-persistent (inv_freq buffers are not saved): excluded from state_dict
        self._rotary = [rotary]

    @property
    def rotary(self) -> nn.Module:
        return self._rotary[0]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: B × L × H; mask: B × 1 × L × L bool (True = may attend) or None (all attend)
        B, L, _ = x.shape
        rotary = self.rotary.to(x.device)
        position_ids = torch.arange(L, device=x.device).unsqueeze(0).expand(B, L)  # B × L
        cos, sin = rotary(x, position_ids)  # B × L × d each
        additive: torch.Tensor | None = None
        if mask is not None:
            additive = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)  # B × 1 × L × L
            additive = additive.masked_fill(~mask, torch.finfo(x.dtype).min)
        out: torch.Tensor = self.layer(
            x,
            attention_mask=additive,
            position_ids=position_ids,
            position_embeddings=(cos, sin),
            is_causal=False,
        )  # B × L × H
        return out


def build_llama_blocks(config: PredictorConfig) -> nn.ModuleList:
    """``config.num_layers`` bidirectional Llama decoder layers built from ``config.llama_config``."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    cfg = _llama_config(config)
    rotary = LlamaRotaryEmbedding(cfg)
    return nn.ModuleList(LlamaBlock(LlamaDecoderLayer(cfg, layer_idx=i), rotary) for i in range(config.num_layers))


_LLAMA_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "attention_bias",
    "attention_dropout",
    "mlp_bias",
    "max_position_embeddings",
    "num_hidden_layers",
)


def llama_config_dict(llama_path: str | Path) -> dict[str, Any]:
    """The architecture fields of ``<llama_path>/config.json`` (a dict for ``PredictorConfig.llama_config``)."""
    path = Path(llama_path) / "config.json"
    if not path.is_file():
        raise PredictorError(f"{llama_path} is not a Llama checkpoint folder: it has no config.json")
    raw = json.loads(path.read_text())
    return {k: raw[k] for k in _LLAMA_KEYS if k in raw and raw[k] is not None}


def predictor_config_from_llama(
    llama_path: str | Path,
    *,
    input_dim: int,
    output_dim: int,
    layers: tuple[int, int] = (8, 16),
    **overrides: Any,
) -> PredictorConfig:
    """A ``PredictorConfig`` whose blocks fit decoder layers ``[start, end)`` of the Llama at ``llama_path``."""
    llama = llama_config_dict(llama_path)
    start, end = layers
    total = int(llama.get("num_hidden_layers", end))
    if not 0 <= start < end <= total:
        raise PredictorError(f"layers must satisfy 0 <= start < end <= {total}; got {layers}")
    fields: dict[str, Any] = {
        "input_dim": input_dim,
        "output_dim": output_dim,
        "hidden_dim": int(llama["hidden_size"]),
        "num_heads": int(llama["num_attention_heads"]),
        "num_layers": end - start,
        "block_type": "llama",
        "llama_config": llama,
        "dropout": 0.0,
    }
    fields.update(overrides)
    return PredictorConfig(**fields)


def _load_llama_state(llama_path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(llama_path.glob("*.safetensors"))
    if not files:
        raise PredictorError(f"{llama_path} holds no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f), device="cpu"))
    return state


def init_from_llama(model: EmbeddingPredictor, llama_path: str, layers: tuple[int, int] = (8, 16)) -> None:
    """Copy decoder layers ``[start, end)`` of the local Llama checkpoint at ``llama_path`` into ``model``.

    Raises :class:`PredictorError` when the model is not ``block_type="llama"``, its
    ``num_layers`` is not ``end - start``, its ``hidden_dim`` is not Llama's hidden size, or the
    checkpoint lacks a layer or has a tensor of another shape.
    """
    cfg = model.config
    start, end = layers
    root = Path(llama_path)
    llama = llama_config_dict(root)
    if cfg.block_type != "llama":
        raise PredictorError(f"init_from_llama needs block_type='llama'; the model has {cfg.block_type!r}")
    if cfg.num_layers != end - start:
        raise PredictorError(
            f"layers {layers} hold {end - start} decoder layers but the predictor has num_layers={cfg.num_layers}"
        )
    if int(llama["hidden_size"]) != cfg.hidden_dim:
        raise PredictorError(
            f"Llama hidden size is {llama['hidden_size']} but the predictor has hidden_dim={cfg.hidden_dim}"
        )
    state = _load_llama_state(root)
    prefix = "model." if any(k.startswith("model.layers.") for k in state) else ""
    with torch.no_grad():
        for i, block in enumerate(model.layers):
            assert isinstance(block, LlamaBlock)
            src = f"{prefix}layers.{start + i}."
            for name, param in block.layer.state_dict().items():
                key = src + name
                if key not in state:
                    raise PredictorError(f"{llama_path}: missing tensor {key}")
                if tuple(state[key].shape) != tuple(param.shape):
                    raise PredictorError(
                        f"{llama_path}: {key} has shape {tuple(state[key].shape)}, the predictor expects "
                        f"{tuple(param.shape)}"
                    )
                param.copy_(state[key].to(param.dtype))
