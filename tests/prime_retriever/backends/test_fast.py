"""Parity and validation tests of the optimised torch predictor (prime_retriever.backends.fast), on tiny configs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from prime_retriever.backends.factory import create_optimized_predictor
from prime_retriever.backends.fast import (
    FastPathOptions,
    OptimizedPredictor,
    batch_buckets,
    compile_works_on,
    cpu_supports_bf16,
)
from prime_retriever.backends.inference import EagerPredictor, PredictorBackend
from prime_retriever.backends.validation import validate_arrays
from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

D = 32
N_MAX = 6
CUDA = torch.cuda.is_available()


#: fp32, uncompiled, no warm-up: the fast path compared with eager at float precision
FP32 = FastPathOptions(precision="fp32", use_torch_compile=False, warmup=False)

def tiny_config(**kw: Any) -> PredictorConfig:
    base: dict[str, Any] = dict(
        input_dim=D,
        hidden_dim=64,
        output_dim=24,
        num_layers=2,
        num_heads=4,
        max_context_length=N_MAX,
        max_batch_size=8,
        dropout=0.0,
    )
    base.update(kw)
    return PredictorConfig(**base)


def tiny_model(**kw: Any) -> EmbeddingPredictor:
    torch.manual_seed(0)
    m = EmbeddingPredictor(tiny_config(**kw)).eval()
    torch.nn.init.normal_(m.confidence_head.weight, std=0.5)  # a non-trivial confidence to compare
    return m


def inputs(B: int, N: int, seed: int = 0, pad: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """context B × N × D, query B × D, mask B × N (some rows padded at the end or in the middle)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((B, N, D)).astype(np.float32)
    q = rng.standard_normal((B, D)).astype(np.float32)
    m = np.ones((B, N), bool)
    if pad and N > 1:
        m[:, N - 1] = rng.random(B) < 0.5
        m[0, 1:] = False
        if B > 2:
            m[2, 0] = False  # a padded turn in front of real ones
            m[2, N - 1] = True
    return c, q, m


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


@pytest.fixture(params=["bidirectional", "prefix"])
def model(request: pytest.FixtureRequest) -> EmbeddingPredictor:
    return tiny_model(attention_layout=request.param)


def test_batch_buckets() -> None:
    assert batch_buckets(1) == [1]
    assert batch_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert batch_buckets(12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError):
        batch_buckets(0)


def test_implements_backend_protocol(model: EmbeddingPredictor) -> None:
    p = OptimizedPredictor(model, device="cpu", options=FP32)
    assert isinstance(p, PredictorBackend)
    assert (p.input_dim, p.output_dim, p.max_context_length) == (D, 24, N_MAX)
    assert p.model is not model  # the caller's model is untouched
    assert model.dtype == torch.float32


@pytest.mark.parametrize(("B", "N"), [(1, 1), (3, 4), (8, N_MAX), (11, 5), (20, 3)])
def test_static_padding_matches_eager(model: EmbeddingPredictor, B: int, N: int) -> None:
    """Bucket padding (batch to 1/2/4/8, turns to max_context_length) and chunking keep fp32 outputs."""
    c, q, m = inputs(B, N, seed=B * 10 + N)
    ref_e, ref_c = EagerPredictor(model).predict(c, q, m)
    p = OptimizedPredictor(model, device="cpu", options=FP32)
    e, conf = p.predict(c, q, m)
    assert e.shape == (B, 24) and conf.shape == (B,)
    assert e.dtype == np.float32 and conf.dtype == np.float32
    np.testing.assert_allclose(e, ref_e, atol=1e-5)
    np.testing.assert_allclose(conf, ref_c, atol=1e-5)


def test_padding_never_changes_a_real_row(model: EmbeddingPredictor) -> None:
    """A row's output is the same alone, in a padded bucket beside other rows, and with N padded."""
    p = OptimizedPredictor(model, device="cpu", options=FP32)
    c, q, m = inputs(5, 4, seed=3)
    batch_e, _ = p.predict(c, q, m)
    for i in range(5):
        n = int(m[i].nonzero()[0].max()) + 1
        alone_e, _ = p.predict(c[i : i + 1, :n], q[i : i + 1], m[i : i + 1, :n])
        np.testing.assert_allclose(alone_e[0], batch_e[i], atol=1e-5)
    # garbage in the padded turns of a row does not leak into its output
    c2 = c.copy()
    c2[~m] = 1e3
    np.testing.assert_allclose(p.predict(c2, q, m)[0], batch_e, atol=1e-5)


def test_dynamic_path_matches_eager(model: EmbeddingPredictor) -> None:
    c, q, m = inputs(3, 4, seed=1)
    p = OptimizedPredictor(model, device="cpu",
        options=FastPathOptions(precision="fp32", use_static_cache=False, use_torch_compile=False, warmup=False))
    np.testing.assert_allclose(p.predict(c, q, m)[0], EagerPredictor(model).predict(c, q, m)[0], atol=1e-5)


def test_no_mask_equals_all_true_mask(model: EmbeddingPredictor) -> None:
    c, q, _ = inputs(2, 3, pad=False)
    p = OptimizedPredictor(model, device="cpu", options=FP32)
    ref, _ = EagerPredictor(model).predict(c, q)
    np.testing.assert_allclose(p.predict(c, q)[0], ref, atol=1e-5)
    np.testing.assert_allclose(p.predict(c, q, np.ones((2, 3), bool))[0], ref, atol=1e-5)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_bf16_meets_the_accuracy_bar(model: EmbeddingPredictor) -> None:
    c, q, m = inputs(6, 5, seed=2)
    p = OptimizedPredictor(model, device="cpu",
        options=FastPathOptions(precision="auto", use_torch_compile=False, warmup=False))
    assert p.precision == "bf16" and p.model.dtype == torch.bfloat16
    assert cosine_min(p.predict(c, q, m)[0], EagerPredictor(model).predict(c, q, m)[0]) >= 0.999


def test_int8_dynamic_quantisation_meets_the_bar(model: EmbeddingPredictor) -> None:
    c, q, m = inputs(6, 5, seed=2)
    p = OptimizedPredictor(model, device="cpu", options=FastPathOptions(precision="int8", warmup=False))
    assert not p.use_torch_compile
    assert cosine_min(p.predict(c, q, m)[0], EagerPredictor(model).predict(c, q, m)[0]) >= 0.99


# ---------------------------------------------------------------------------------------------- K/V cache
def test_model_cached_context_equals_uncached() -> None:
    m = tiny_model(attention_layout="prefix")
    c, q, mask = (torch.from_numpy(a) for a in inputs(4, 5, seed=4))
    with torch.inference_mode():
        full = m.predict(c, q, mask)
        cached = m.predict_from_context(m.encode_context(c, mask), q)
    torch.testing.assert_close(cached.embedding, full.embedding, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.confidence_logit, full.confidence_logit, atol=1e-5, rtol=0)


@pytest.mark.parametrize("static", [True, False])
def test_prepared_context_equals_uncached(static: bool) -> None:
    """prepare() fills the fixed-shape K/V buffers; predict_prepared() runs 2 tokens; same output in fp32."""
    m = tiny_model(attention_layout="prefix")
    p = OptimizedPredictor(m, device="cpu",
        options=FastPathOptions(precision="fp32", use_static_cache=static, use_torch_compile=False, warmup=False))
    assert p._kv_keys is not None
    assert tuple(p._kv_keys.shape) == (2, 8, 4, N_MAX, 16)  # layers × max_batch × h × N × d
    for B, N, seed in [(3, 4, 0), (8, N_MAX, 1), (1, 2, 2)]:
        c, q, mask = inputs(B, N, seed=seed)
        ref_e, ref_c = EagerPredictor(m).predict(c, q, mask)
        p.prepare(c, mask)
        e, conf = p.predict_prepared(q)
        np.testing.assert_allclose(e, ref_e, atol=1e-5)
        np.testing.assert_allclose(conf, ref_c, atol=1e-5)
        # many queries against one prepared context
        q2 = np.random.default_rng(seed + 9).standard_normal((B, D)).astype(np.float32)
        np.testing.assert_allclose(p.predict_prepared(q2)[0], EagerPredictor(m).predict(c, q2, mask)[0], atol=1e-5)


def test_prepare_errors() -> None:
    bidir = OptimizedPredictor(tiny_model(), device="cpu", options=FP32)
    c, q, mask = inputs(2, 3)
    with pytest.raises(PredictorError, match="prefix"):
        bidir.prepare(c, mask)
    p = OptimizedPredictor(tiny_model(attention_layout="prefix"), device="cpu",
        options=FastPathOptions(precision="fp32", use_torch_compile=False))
    with pytest.raises(PredictorError, match="no prepared context"):
        p.predict_prepared(q)
    with pytest.raises(PredictorError, match="max_batch_size"):
        p.prepare(inputs(9, 3)[0])
    p.prepare(c, mask)
    with pytest.raises(PredictorError, match="batch mismatch"):
        p.predict_prepared(q[:1])
    with pytest.raises(PredictorError, match="NaN"):
        p.prepare(np.full((1, 2, D), np.nan, np.float32))


# ---------------------------------------------------------------------------------------------- validation
BAD: list[tuple[str, Any]] = [
    ("context rank", lambda c, q, m: (c[0], q, None)),
    ("context dim", lambda c, q, m: (c[..., :5], q, None)),
    ("query dim", lambda c, q, m: (c, q[:, :5], None)),
    ("batch mismatch", lambda c, q, m: (c, q[:1], None)),
    ("empty batch", lambda c, q, m: (c[:0], q[:0], None)),
    ("empty context", lambda c, q, m: (c[:, :0], q, None)),
    ("too many turns", lambda c, q, m: (np.zeros((2, N_MAX + 1, D), np.float32), q, None)),
    ("mask shape", lambda c, q, m: (c, q, m[:, :1])),
    ("mask dtype", lambda c, q, m: (c, q, m.astype(np.int64))),
    ("mask empty row", lambda c, q, m: (c, q, np.zeros_like(m))),
    ("nan context", lambda c, q, m: (np.where(c > 1, np.nan, c), q, None)),
    ("inf query", lambda c, q, m: (c, np.full_like(q, np.inf), None)),
    ("not numeric", lambda c, q, m: ([["a"]], q, None)),
]


@pytest.mark.parametrize(("label", "make"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_predictor_error(label: str, make: Any) -> None:
    p = OptimizedPredictor(tiny_model(), device="cpu", options=FP32)
    c, q, m = inputs(2, 3)
    with pytest.raises(PredictorError):
        p.predict(*make(c, q, m))
    with pytest.raises(PredictorError):
        validate_arrays(p.config, *make(c, q, m))


def test_bad_options() -> None:
    m = tiny_model()
    with pytest.raises(PredictorError, match="fp16"):
        OptimizedPredictor(m, device="cpu", options=FastPathOptions(precision="fp16"))
    with pytest.raises(PredictorError, match="buckets"):
        OptimizedPredictor(m, device="cpu", options=FastPathOptions(buckets=[1, 64]))
    with pytest.raises(TypeError):
        create_optimized_predictor("not a model")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- factory
def test_create_optimized_predictor_torch_backend_from_config() -> None:
    p = create_optimized_predictor(tiny_config(attention_layout="prefix"), device="cpu", backend="torch",
        options=FastPathOptions(precision="fp32"))
    assert isinstance(p, OptimizedPredictor)
    assert not p.use_torch_compile  # off on CPU by default (see the module docstring)
    c, q, m = inputs(2, 3)
    p.prepare(c, m)
    np.testing.assert_allclose(p.predict_prepared(q)[0], p.predict(c, q, m)[0], atol=1e-5)


def test_create_optimized_predictor_cpu_default_is_onnx_int8() -> None:
    pytest.importorskip("onnxruntime")
    from prime_retriever.backends.onnx import OnnxPredictor

    model = tiny_model()
    p = create_optimized_predictor(model, device="cpu")
    assert isinstance(p, OnnxPredictor) and p.int8
    assert isinstance(p, PredictorBackend)
    c, q, m = inputs(4, 5)
    assert cosine_min(p.predict(c, q, m)[0], EagerPredictor(model).predict(c, q, m)[0]) >= 0.99


# ---------------------------------------------------------------------------------------------- compiled
@pytest.mark.slow
def test_compiled_matches_eager() -> None:
    """torch.compile(fullgraph=True, dynamic=False), one bucket (CPU compilation is slow)."""
    model = tiny_model()
    p = OptimizedPredictor(model, device="cpu",
        options=FastPathOptions(precision="fp32", use_torch_compile=True, compile_mode="default", buckets=[4]))
    assert p.use_torch_compile and "compiled" in p.name
    for B, N in [(4, N_MAX), (3, 2)]:  # one bucket: both shapes pad to 4 × N_MAX, no recompilation
        c, q, m = inputs(B, N, seed=B)
        ref_e, ref_c = EagerPredictor(model).predict(c, q, m)
        e, conf = p.predict(c, q, m)
        np.testing.assert_allclose(e, ref_e, atol=1e-5)
        np.testing.assert_allclose(conf, ref_c, atol=1e-5)


@pytest.mark.slow
def test_compiled_without_static_shapes_serves_any_number_of_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without static buffers every (B, N) reaches the compiled function as it is: one graph with
    symbolic shapes serves them all (a static-shape graph per shape would hit the recompile limit)."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    model = tiny_model()
    opts = FastPathOptions(precision="fp32", use_static_cache=False, use_torch_compile=True, compile_mode="default",
                           buckets=[4], warmup=False)
    p = OptimizedPredictor(model, device="cpu", options=opts)
    shapes = [(b, n) for b in (2, 3, 4) for n in range(2, N_MAX + 1)]
    assert len(shapes) > torch._dynamo.config.recompile_limit
    for B, N in shapes:
        c, q, m = inputs(B, N, seed=B * 10 + N)
        np.testing.assert_allclose(p.predict(c, q, m)[0], EagerPredictor(model).predict(c, q, m)[0], atol=1e-5)


@pytest.mark.parametrize("triton", [True, False])
def test_compile_works_on_follows_triton_for_cuda(triton: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the default compile needs Triton for the GPU (checked without a GPU: the helper's answer
    is forced); CPU compilation does not use Triton."""
    import torch.utils._triton as torch_triton

    monkeypatch.setattr(torch_triton, "has_triton", lambda: triton)
    assert compile_works_on(torch.device("cuda")) is triton
    assert compile_works_on(torch.device("cpu"))


# ---------------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not CUDA, reason="CUDA graphs and fp16 need a CUDA device")
@pytest.mark.parametrize("layout", ["bidirectional", "prefix"])
def test_cuda_fp16_cuda_graphs(layout: str) -> None:
    model = tiny_model(attention_layout=layout)
    p = create_optimized_predictor(model, device="cuda", options=FastPathOptions(buckets=[1, 4, 8]))
    assert isinstance(p, OptimizedPredictor)
    assert p.precision == "fp16" and p.use_torch_compile and p.compile_mode == "reduce-overhead"
    for B, N in [(1, 3), (4, N_MAX), (11, 5)]:
        c, q, m = inputs(B, N, seed=B)
        ref_e, _ = EagerPredictor(model).predict(c, q, m)
        e1, _ = p.predict(c, q, m)
        e2, _ = p.predict(c, q, m)  # replayed graph; outputs were copied out
        assert cosine_min(e1, ref_e) >= 0.999
        np.testing.assert_array_equal(e1, e2)
    if layout == "prefix":
        c, q, m = inputs(4, 5, seed=7)
        p.prepare(c, m)
        assert cosine_min(p.predict_prepared(q)[0], EagerPredictor(model).predict(c, q, m)[0]) >= 0.999


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_fp32_static_parity() -> None:
    model = tiny_model(attention_layout="prefix")
    p = OptimizedPredictor(model, device="cuda", options=FP32)
    c, q, m = inputs(5, 4)
    ref_e, _ = EagerPredictor(model).predict(c, q, m)
    np.testing.assert_allclose(p.predict(c, q, m)[0], ref_e, atol=1e-4)
    p.prepare(c, m)
    np.testing.assert_allclose(p.predict_prepared(q)[0], ref_e, atol=1e-4)
