"""Training hyper-parameters (spec section 8): what a run optimises, not the architecture it trains."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainingConfig"]


class TrainingConfig(BaseModel):
    """Training hyper-parameters (spec section 8)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(default=1e-4, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    batch_size: int = Field(default=64, ge=2, description="In-batch negatives need at least 2 rows")
    num_epochs: int = Field(default=10, ge=1)
    warmup_steps: int = Field(default=1000, ge=0)
    temperature: float = Field(default=0.07, gt=0.0, description="InfoNCE temperature")
    gradient_checkpointing: bool = Field(default=True)
    mixed_precision: bool = Field(default=True)
    y_encoder_lr_multiplier: float = Field(
        default=0.05, ge=0.0, description="LR multiplier for the Y-Encoder; 0 freezes it (targets pre-encoded)"
    )
