"""Tests of the text encoder layer, with the real offline all-MiniLM-L6-v2 (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import EncoderError, PrimeError
from prime_retriever.text.encoders import (
    HFTextEncoder,
    TextEncoder,
    check_encoder_dims,
    default_encoder_path,
)

TEXTS = [
    "The Eiffel Tower is in Paris.",
    "Who wrote the novel Moby-Dick?",
    "Herman Melville wrote Moby-Dick, published in 1851.",
    "a",
    "Photosynthesis converts light energy into chemical energy in plants and algae. " * 3,
    "",
]


@pytest.fixture(scope="module")
def encoder() -> HFTextEncoder:
    return HFTextEncoder()


def test_default_model_identity(encoder: HFTextEncoder) -> None:
    assert isinstance(encoder, TextEncoder)
    assert encoder.dim == 384
    assert encoder.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert encoder.max_length == 256
    assert Path(encoder.model_path) == default_encoder_path().resolve()


def test_shape_dtype_and_unit_rows(encoder: HFTextEncoder) -> None:
    out = encoder.encode(TEXTS)
    assert out.shape == (len(TEXTS), 384)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Related sentences are closer than unrelated ones.
    assert out[1] @ out[2] > out[1] @ out[0]


def test_empty_input(encoder: HFTextEncoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


def test_parity_with_sentence_transformers(encoder: HFTextEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_encoder_path()), device="cpu")
    long_text = "word " * 400  # longer than the 256-token limit: both must truncate alike
    texts = [*TEXTS, long_text]
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)  # (n, 384)
    got = encoder.encode(texts)
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() > 0.9999, cosine


def test_batch_size_and_order_independence(encoder: HFTextEncoder) -> None:
    full = encoder.encode(TEXTS, batch_size=64)
    one_by_one = encoder.encode(TEXTS, batch_size=1)
    np.testing.assert_allclose(one_by_one, full, atol=1e-5)
    reversed_out = encoder.encode(TEXTS[::-1], batch_size=2)
    np.testing.assert_allclose(reversed_out[::-1], full, atol=1e-5)


def test_truncates_long_texts(encoder: HFTextEncoder) -> None:
    base = "alpha beta gamma delta " * 70  # > 256 tokens
    a, b = encoder.encode([base, base + " completely different tail words"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_inputs(encoder: HFTextEncoder) -> None:
    with pytest.raises(EncoderError, match="single str"):
        encoder.encode("not a list")
    with pytest.raises(EncoderError, match="texts\\[1\\]"):
        encoder.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(EncoderError, match="batch_size"):
        encoder.encode(["ok"], batch_size=0)


def test_check_encoder_dims(encoder: HFTextEncoder) -> None:
    check_encoder_dims(encoder, 384, 384)
    with pytest.raises(EncoderError, match=r"384.*768|768.*384") as info:
        check_encoder_dims(encoder, 768, 384)
    assert "input_dim=768" in str(info.value)
    with pytest.raises(EncoderError, match="output_dim=512"):
        check_encoder_dims(encoder, 384, 512)
    assert isinstance(info.value, PrimeError)


def test_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="does-not-exist"):
        HFTextEncoder(tmp_path / "does-not-exist")


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="cannot load encoder model"):
        HFTextEncoder(tmp_path)


def test_unknown_hub_id_fails_offline() -> None:
    with pytest.raises(EncoderError, match="cannot load encoder model"):
        HFTextEncoder("no-such-org/no-such-model-xyz")


def test_name_override() -> None:
    enc = HFTextEncoder(default_encoder_path(), name="my-minilm")
    assert enc.name == "my-minilm"


def test_two_saved_models_in_same_named_folders_get_different_names(tmp_path: Path) -> None:
    """The name keys the embedding cache: two fine-tuned copies saved as ``*/y_encoder`` must not share
    it (the same weights, wherever they are saved, do)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache

    src = default_encoder_path()
    folders = []
    for run, scale in (("a", 0.0), ("b", 0.05), ("c", 0.0)):
        model, tok = AutoModel.from_pretrained(src), AutoTokenizer.from_pretrained(src)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * scale)
        folders.append(tmp_path / run / "y_encoder")
        model.save_pretrained(folders[-1])
        tok.save_pretrained(folders[-1])
    a, b, c = (HFTextEncoder(f) for f in folders)
    assert a.name.startswith("y_encoder@") and a.name != b.name and a.name == c.name
    cache = tmp_path / "cache"
    text = ["the capital of France is Paris"]
    CachedEncoder(a, EmbeddingCache(cache)).encode(text)
    via_cache = CachedEncoder(b, EmbeddingCache(cache)).encode(text)
    np.testing.assert_allclose(via_cache, b.encode(text), atol=1e-6)  # B's own vector, not A's
    assert float(via_cache[0] @ a.encode(text)[0]) < 0.99
