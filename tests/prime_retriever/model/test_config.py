from __future__ import annotations

import pytest
from pydantic import ValidationError

from prime_retriever.model.config import PredictorConfig


def test_spec_defaults() -> None:
    c = PredictorConfig()
    assert (c.input_dim, c.hidden_dim, c.output_dim) == (1024, 2048, 1024)
    assert (c.num_layers, c.num_heads, c.max_context_length, c.dropout) == (4, 8, 10, 0.1)
    assert c.checkpoint_path is None
    assert c.use_static_cache and c.use_torch_compile
    assert c.compile_mode == "reduce-overhead" and c.max_batch_size == 32


def test_frozen() -> None:
    c = PredictorConfig()
    with pytest.raises(ValidationError):
        c.hidden_dim = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_layers": 0}, "num_layers"),
        ({"num_layers": 13}, "num_layers"),
        ({"dropout": 0.6}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"num_heads": 0}, "num_heads"),
        ({"max_context_length": 0}, "max_context_length"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"hidden_dim": 100, "num_heads": 8}, "hidden_dim (100) must be divisible by num_heads (8)"),
        ({"compile_mode": "fast"}, "compile_mode must be one of 'default', 'reduce-overhead', 'max-autotune'"),
        ({"residual": True, "input_dim": 384, "output_dim": 768}, "residual=True needs input_dim == output_dim"),
        ({"block_type": "llama"}, "needs llama_config"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_predictor_config(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PredictorConfig(**kwargs)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune"])
def test_compile_modes_accepted(mode: str) -> None:
    assert PredictorConfig(compile_mode=mode).compile_mode == mode


def test_json_round_trip() -> None:
    c = PredictorConfig(input_dim=384, output_dim=384, hidden_dim=256, num_heads=4, attention_layout="prefix")
    assert PredictorConfig.model_validate_json(c.model_dump_json()) == c
