from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.training_config import TrainingConfig


def test_spec_defaults() -> None:
    t = TrainingConfig()
    assert (t.learning_rate, t.weight_decay, t.batch_size, t.num_epochs) == (1e-4, 0.01, 64, 10)
    assert (t.warmup_steps, t.temperature, t.y_encoder_lr_multiplier) == (1000, 0.07, 0.05)
    assert t.gradient_checkpointing and t.mixed_precision


def test_frozen() -> None:
    with pytest.raises(ValidationError):
        TrainingConfig().batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs", [{"learning_rate": 0.0}, {"batch_size": 1}, {"temperature": 0.0}, {"y_encoder_lr_multiplier": -1.0}]
)
def test_invalid_training_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrainingConfig(**kwargs)
