"""JSON-facing input and output of one prediction (pydantic).

The embedding dimension is not hard-coded: pass the configured model's dimension through the
validation context, ``PredictorInput.model_validate(data, context={"dim": 384})``; without a
context it defaults to 1024, the spec's dimension. ``max_turns`` in the context caps the turns.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from prime_retriever.model.config import DEFAULT_EMBEDDING_DIM


def _dim(info: ValidationInfo) -> int:
    ctx: dict[str, Any] = info.context or {}
    return int(ctx.get("dim", DEFAULT_EMBEDDING_DIM))


def _check_vector(v: list[float], dim: int, what: str) -> list[float]:
    if len(v) != dim:
        raise ValueError(f"{what} must be {dim}-dim; got {len(v)}")
    if not all(math.isfinite(x) for x in v):
        raise ValueError(f"{what} contains NaN or Inf")
    return v


class PredictorInput(BaseModel):
    """Input for one embedding prediction.

    Strict: numbers must be JSON numbers (not ``"0.5"`` or ``true``), and an unknown field is an
    error rather than ignored (a ``context_mask`` the schema does not have would otherwise be dropped
    silently, and its padded turns read as real ones).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    context_embeddings: list[list[float]] = Field(description="Context turn embeddings (N × D), oldest first")
    query_embedding: list[float] = Field(description="Query embedding (D)")

    @field_validator("context_embeddings")
    @classmethod
    def _validate_context(cls, v: list[list[float]], info: ValidationInfo) -> list[list[float]]:
        if len(v) == 0:
            raise ValueError("context_embeddings cannot be empty")
        max_turns = (info.context or {}).get("max_turns")
        if max_turns is not None and len(v) > int(max_turns):
            raise ValueError(f"context_embeddings has {len(v)} turns; at most {max_turns} allowed")
        dim = _dim(info)
        lengths = {len(e) for e in v}
        if len(lengths) > 1:
            raise ValueError(f"context_embeddings is ragged: turn lengths {sorted(lengths)}")
        for i, e in enumerate(v):
            _check_vector(e, dim, f"context_embeddings[{i}]")
        return v

    @field_validator("query_embedding")
    @classmethod
    def _validate_query(cls, v: list[float], info: ValidationInfo) -> list[float]:
        return _check_vector(v, _dim(info), "query_embedding")


class PredictorOutput(BaseModel):
    """Output of one embedding prediction."""

    model_config = ConfigDict(frozen=True)

    predicted_embedding: list[float] = Field(description="Predicted target embedding (D), unit norm")
    confidence: float = Field(
        ge=0.0, le=1.0,
        description="the predictor head's P(the prediction ranks its gold document first), before any search",
    )

    @field_validator("predicted_embedding")
    @classmethod
    def _validate_embedding(cls, v: list[float], info: ValidationInfo) -> list[float]:
        return _check_vector(v, _dim(info), "predicted_embedding")
