from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from prime_retriever.model.schemas import PredictorInput, PredictorOutput


def vec(d: int, x: float = 0.1) -> list[float]:
    return [x] * d


def test_default_dim_is_1024() -> None:
    PredictorInput(context_embeddings=[vec(1024)], query_embedding=vec(1024))
    with pytest.raises(ValidationError, match="1024-dim"):
        PredictorInput(context_embeddings=[vec(384)], query_embedding=vec(384))


def test_dim_from_context() -> None:
    ok = PredictorInput.model_validate(
        {"context_embeddings": [vec(384)] * 2, "query_embedding": vec(384)}, context={"dim": 384}
    )
    assert len(ok.context_embeddings) == 2
    with pytest.raises(ValidationError, match="must be 384-dim; got 383"):
        PredictorInput.model_validate(
            {"context_embeddings": [vec(384)], "query_embedding": vec(383)}, context={"dim": 384}
        )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ([], "cannot be empty"),
        ([vec(8), vec(7)], "ragged"),
        ([vec(7), vec(7)], "must be 8-dim; got 7"),
        ([[*vec(7), math.nan]], "NaN or Inf"),
        ([[*vec(7), math.inf]], "NaN or Inf"),
        ([vec(8)] * 4, "at most 3 allowed"),
    ],
)
def test_bad_context(context: list[list[float]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PredictorInput.model_validate(
            {"context_embeddings": context, "query_embedding": vec(8)}, context={"dim": 8, "max_turns": 3}
        )


def test_bad_query_nan() -> None:
    with pytest.raises(ValidationError, match="query_embedding contains NaN"):
        PredictorInput.model_validate(
            {"context_embeddings": [vec(8)], "query_embedding": [*vec(7), math.nan]}, context={"dim": 8}
        )


def test_output_validation() -> None:
    out = PredictorOutput.model_validate({"predicted_embedding": vec(8), "confidence": 0.3}, context={"dim": 8})
    assert out.confidence == 0.3
    for conf in (-0.1, 1.5):
        with pytest.raises(ValidationError):
            PredictorOutput.model_validate({"predicted_embedding": vec(8), "confidence": conf}, context={"dim": 8})
    with pytest.raises(ValidationError, match="8-dim"):
        PredictorOutput.model_validate({"predicted_embedding": vec(9), "confidence": 0.3}, context={"dim": 8})
