"""encoder="fast": the fastest path that agrees with fp32 eager, and never one that does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prime_retriever.errors import EncoderError
from prime_retriever.text.calibration_texts import CALIBRATION_TEXTS
from prime_retriever.text.encoders import HFTextEncoder
from prime_retriever.text.fast_encoder import (
    EncoderOptions,
    FastPolicy,
    choose_encoder,
    choose_fast,
    load_encoder,
    onnx_encoder,
)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fast-cache")


def test_fast_picks_int8_here_and_records_why(cache_root: Path) -> None:
    choice = choose_fast(None, EncoderOptions(cache_root=cache_root))
    assert choice.backend == "onnx-int8"
    int8 = next(s for s in choice.scores if s.backend == "onnx-int8")
    assert int8.passed and int8.cosine_mean >= 0.995 and int8.cosine_min >= 0.98
    record = next((cache_root / "onnx-encoders").iterdir()) / "calibration.json"
    assert json.loads(record.read_text())  # a later process chooses without loading torch
    again = load_encoder("fast", EncoderOptions(cache_root=cache_root))
    assert again.name == choice.encoder.name


def test_a_path_that_fails_the_check_is_not_chosen(cache_root: Path) -> None:
    """A bar int8 cannot reach (its embeddings differ from fp32's in the 4th digit) skips it for onnx-fp32,
    and with only int8 to try the choice is fp32 eager: accuracy is never traded silently."""
    eager = HFTextEncoder()
    int8 = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    fp32 = onnx_encoder(None, "onnx-fp32", EncoderOptions(cache_root=cache_root))
    strict = FastPolicy(cosine_mean=0.99999, cosine_min=0.9999)
    choice = choose_encoder(eager, [int8, fp32], CALIBRATION_TEXTS, strict)
    assert choice.encoder is fp32
    assert [(s.backend, s.passed) for s in choice.scores] == [("onnx-int8", False), ("onnx-fp32", True)]
    alone = choose_encoder(eager, [int8], CALIBRATION_TEXTS, strict)
    assert alone.encoder is eager and alone.backend == "torch-fp32"
    # through choose_fast too, recorded under its own policy key
    opts = EncoderOptions(cache_root=cache_root, policy=FastPolicy(0.99999, 0.9999, order=("onnx-int8",)))
    assert choose_fast(None, opts).backend == "torch-fp32"
    assert choose_fast(None, opts).backend == "torch-fp32"  # from the record


def test_spec_shorthands(cache_root: Path) -> None:
    opts = EncoderOptions(cache_root=cache_root)
    assert isinstance(load_encoder("eager", opts), HFTextEncoder)
    assert load_encoder("onnx-fp32", opts).name.endswith("+onnx-fp32")
    with pytest.raises(EncoderError):
        load_encoder(None, EncoderOptions(backend="tensorrt"))
    with pytest.raises(EncoderError):
        load_encoder("/no/such/model/folder", EncoderOptions(backend="onnx-int8", cache_root=cache_root))
