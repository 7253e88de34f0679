"""ONNX export and the onnxruntime backend: parity with torch (fp32 < 1e-4, int8 cosine > 0.99)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from prime_retriever.backends import onnx as pr_onnx
from prime_retriever.backends.inference import EagerPredictor, PredictorBackend
from prime_retriever.backends.onnx import OnnxPredictor, export_onnx, quantize_onnx_int8
from prime_retriever.cli.main import main as cli_main
from prime_retriever.errors import PredictorError
from prime_retriever.model.checkpoint import save_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

D = 32
N_MAX = 6


def tiny_model(**kw: Any) -> EmbeddingPredictor:
    cfg: dict[str, Any] = dict(
        input_dim=D, hidden_dim=64, output_dim=24, num_layers=2, num_heads=4, max_context_length=N_MAX, dropout=0.0
    )
    cfg.update(kw)
    torch.manual_seed(0)
    m = EmbeddingPredictor(PredictorConfig(**cfg)).eval()
    torch.nn.init.normal_(m.confidence_head.weight, std=0.5)
    return m


def random_inputs(B: int, N: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((B, N, D)).astype(np.float32)  # B × N × D
    q = rng.standard_normal((B, D)).astype(np.float32)  # B × D
    m = np.ones((B, N), bool)  # B × N
    m[0, N // 2 + 1 :] = False
    if B > 1 and N > 1:
        m[1, 0] = False
    return c, q, m


def realish_inputs(B: int, N: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like sentence embeddings: unit vectors sharing a common direction, turns of a dialogue correlated."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(D)
    topic = rng.standard_normal((B, 1, D))
    c = 2.0 * common + 1.5 * topic + rng.standard_normal((B, N, D))
    q = 2.0 * common + 1.5 * topic[:, 0] + rng.standard_normal((B, D))
    c /= np.linalg.norm(c, axis=-1, keepdims=True)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    m = np.ones((B, N), bool)
    m[: B // 2, : N // 3] = False  # the early turns of some dialogues are missing
    return c.astype(np.float32), q.astype(np.float32), m


def is_7bit_stamped(graph: Path) -> bool:
    """Whether ``graph`` carries the stamp :func:`quantize_onnx_int8` puts on 7-bit int8 graphs."""
    import onnx

    props = onnx.load(str(graph), load_external_data=False).metadata_props
    return any(p.key == pr_onnx.INT8_FORMAT_KEY and p.value == pr_onnx.INT8_FORMAT for p in props)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


@pytest.fixture(scope="module", params=["bidirectional", "prefix"])
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EmbeddingPredictor, Path]:
    model = tiny_model(attention_layout=request.param)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def test_onnx_export(exported: tuple[EmbeddingPredictor, Path]) -> None:
    """Export, reload in onnxruntime, and match torch: dynamic batch and turns, masks, max abs diff < 1e-4."""
    import onnx

    model, path = exported
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["context_embeddings", "query_embedding", "context_mask"]
    eager = EagerPredictor(model)
    for optimize in (False, True):
        p = OnnxPredictor(path, model.config, optimize=optimize)
        for B, N, seed in [(1, 1, 0), (1, N_MAX, 1), (5, 3, 2), (9, N_MAX, 3)]:
            for make in (random_inputs, realish_inputs):
                c, q, m = make(B, N, seed)
                ref_e, ref_c = eager.predict(c, q, m)
                e, conf = p.predict(c, q, m)
                assert e.shape == (B, 24) and conf.shape == (B,)
                assert np.abs(e - ref_e).max() < 1e-4
                assert np.abs(conf - ref_c).max() < 1e-4
        # no mask = all real turns
        c, q, _ = random_inputs(2, 4)
        assert np.abs(p.predict(c, q)[0] - eager.predict(c, q)[0]).max() < 1e-4
    assert path.with_name("model.opt.onnx").is_file()  # the ORT-optimised graph is saved and reused
    assert isinstance(OnnxPredictor(path, model.config), PredictorBackend)


def test_onnx_int8_cosine(exported: tuple[EmbeddingPredictor, Path]) -> None:
    model, path = exported
    p = OnnxPredictor(path, model.config, int8=True)
    assert p.int8 and p.path.name == "model.int8.onnx"
    assert p.path.stat().st_size < path.stat().st_size
    eager = EagerPredictor(model)
    for make in (random_inputs, realish_inputs):
        c, q, m = make(8, N_MAX, seed=5)
        assert cosine_min(p.predict(c, q, m)[0], eager.predict(c, q, m)[0]) > 0.99


def test_quantize_per_tensor_also_loads(tmp_path: Path, exported: tuple[EmbeddingPredictor, Path]) -> None:
    model, path = exported
    q = quantize_onnx_int8(path, tmp_path / "pt.int8.onnx", per_channel=False)
    p = OnnxPredictor(q, model.config, int8=True, optimize=False)
    c, qq, m = random_inputs(3, 4)
    assert cosine_min(p.predict(c, qq, m)[0], EagerPredictor(model).predict(c, qq, m)[0]) > 0.99


class _MatMulIntegerWithoutVnni:
    """MatMulInteger as x86 CPUs without VNNI compute it (MLAS's AVX2 / AVX-512BW u8 × s8 kernel).

    ``vpmaddubsw`` adds each adjacent pair of uint8 × int8 products along K into an int16, saturating at
    ±32,767, before the int32 accumulation; the activation zero point is subtracted exactly afterwards.
    ``saturated`` counts the pairs that hit the bound.
    """

    saturated = 0

    @classmethod
    def op(cls) -> type:
        from onnx.reference.op_run import OpRun

        def _run(self: Any, A: np.ndarray, B: np.ndarray, a_zero_point: np.ndarray | None = None,
                 b_zero_point: np.ndarray | None = None) -> tuple[np.ndarray]:
            # a: ... × K uint8; b: K × M int8, symmetric (no b zero point)
            a, b = A.astype(np.int32), B.astype(np.int32)
            if a.shape[-1] % 2:  # pad K to pairs
                a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), np.int32)], -1)
                b = np.concatenate([b, np.zeros((1, b.shape[1]), np.int32)], 0)
            pairs = np.einsum("...jt,jtm->...jm", a.reshape(*a.shape[:-1], -1, 2), b.reshape(-1, 2, b.shape[1]))
            cls.saturated += int((np.abs(pairs) > 32767).sum())  # ... × K/2 × M
            acc = np.clip(pairs, -32768, 32767).sum(-2)  # ... × M
            if a_zero_point is not None:
                acc = acc - a_zero_point.astype(np.int32) * B.astype(np.int32).sum(0)
            return (acc.astype(np.int32),)

        return type("MatMulInteger", (OpRun,), {"op_domain": "", "_run": _run})


def _reference_embedding(graph: Path, feeds: dict[str, np.ndarray], new_ops: list[type] | None = None) -> np.ndarray:
    """The ``embedding`` output (B × O) of ``graph`` under onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    out: Any = ReferenceEvaluator(str(graph), new_ops=new_ops).run(["embedding"], feeds)
    return np.asarray(out[0])


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_cannot_saturate_without_vnni(
    tmp_path: Path, exported: tuple[EmbeddingPredictor, Path], per_channel: bool
) -> None:
    """The int8 graph keeps its accuracy on CPUs without VNNI, checked on any CPU: onnx's reference
    evaluator runs it with MatMulInteger computed as those CPUs do. 7-bit weights never saturate and
    match the exact result; 8-bit weights saturate and fall below the 0.99 bar, as they did in CI on such a
    machine (0.80-0.95), though exact int8 arithmetic keeps them at 0.9998. For these inputs the emulation
    gives 0.9108464 (bidirectional) and 0.9096804 (prefix) per-tensor; that CI run measured 0.9108464 and
    0.9096803 in ``test_quantize_per_tensor_also_loads``."""
    model, path = exported
    c, q, m = random_inputs(3, 4)
    feeds = {"context_embeddings": c, "query_embedding": q, "context_mask": m}
    want = EagerPredictor(model).predict(c, q, m)[0]
    without_vnni = _MatMulIntegerWithoutVnni.op()

    shipped = quantize_onnx_int8(path, tmp_path / "7bit.int8.onnx", per_channel=per_channel)
    _MatMulIntegerWithoutVnni.saturated = 0
    emulated = _reference_embedding(shipped, feeds, [without_vnni])
    exact = _reference_embedding(shipped, feeds)
    assert _MatMulIntegerWithoutVnni.saturated == 0
    np.testing.assert_array_equal(emulated, exact)
    assert cosine_min(emulated, want) > 0.99

    eight_bit = quantize_onnx_int8(path, tmp_path / "8bit.int8.onnx", per_channel=per_channel, reduce_range=False)
    _MatMulIntegerWithoutVnni.saturated = 0
    drifted = _reference_embedding(eight_bit, feeds, [without_vnni])
    assert _MatMulIntegerWithoutVnni.saturated > 0
    assert cosine_min(drifted, want) < 0.99 < cosine_min(_reference_embedding(eight_bit, feeds), want)


@pytest.mark.parametrize("optimize", [False, True])
def test_a_cached_8bit_int8_graph_is_quantised_again(tmp_path: Path, optimize: bool) -> None:
    """A <model>.int8.onnx left by an earlier version (8-bit weights, no format stamp), newer than the
    model, is replaced by a 7-bit graph on load, and so is its ORT-optimised <model>.int8.opt.onnx."""
    import onnx
    from onnx import numpy_helper

    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.onnx")
    old = quantize_onnx_int8(path, tmp_path / "m.int8.onnx", reduce_range=False)
    if optimize:  # the earlier version's optimised copy of its 8-bit graph, too
        OnnxPredictor(old, model.config, int8=True, optimize=True)
        assert (tmp_path / "m.int8.opt.onnx").is_file()
    assert not is_7bit_stamped(old)
    p = OnnxPredictor(path, model.config, int8=True, optimize=optimize)
    assert p.path == old and is_7bit_stamped(old)
    assert p.session.get_modelmeta().custom_metadata_map[pr_onnx.INT8_FORMAT_KEY] == pr_onnx.INT8_FORMAT
    graph = onnx.load(str(old)).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_external_data_above_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights over the threshold (2 GB in real life) go to an external data file that ORT loads."""
    monkeypatch.setattr(pr_onnx, "EXTERNAL_DATA_THRESHOLD", 0)
    model = tiny_model()
    path = export_onnx(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").is_file()
    assert path.stat().st_size < 100_000  # the graph alone
    c, q, m = random_inputs(2, 3)
    ref = EagerPredictor(model).predict(c, q, m)[0]
    assert np.abs(OnnxPredictor(path, model.config, optimize=True).predict(c, q, m)[0] - ref).max() < 1e-4
    # the int8 copy keeps its weights in its own .data file, with the 7-bit stamp on the graph
    q8 = OnnxPredictor(path, model.config, int8=True, optimize=True)
    assert (tmp_path / "big.int8.onnx.data").is_file() and is_7bit_stamped(q8.path)
    assert cosine_min(q8.predict(c, q, m)[0], ref) > 0.99


BAD: list[tuple[str, Any]] = [
    ("context rank", lambda c, q, m: (c[0], q, None)),
    ("context dim", lambda c, q, m: (c[..., :5], q, None)),
    ("batch mismatch", lambda c, q, m: (c, q[:1], None)),
    ("too many turns", lambda c, q, m: (np.zeros((2, N_MAX + 1, D), np.float32), q, None)),
    ("mask shape", lambda c, q, m: (c, q, m[:, :1])),
    ("mask empty row", lambda c, q, m: (c, q, np.zeros_like(m))),
    ("nan", lambda c, q, m: (np.full_like(c, np.nan), q, None)),
    ("inf", lambda c, q, m: (c, np.full_like(q, -np.inf), None)),
]


@pytest.mark.parametrize(("label", "make"), BAD, ids=[b[0] for b in BAD])
def test_onnx_bad_input_raises_predictor_error(
    label: str, make: Any, exported: tuple[EmbeddingPredictor, Path]
) -> None:
    model, path = exported
    p = OnnxPredictor(path, model.config, optimize=False)
    c, q, m = random_inputs(2, 3)
    with pytest.raises(PredictorError):
        p.predict(*make(c, q, m))


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(PredictorError, match="not found"):
        OnnxPredictor(tmp_path / "nope.onnx", tiny_model().config)


def test_cli_export_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model()
    save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "out" / "model.onnx"
    assert cli_main(["export-onnx", str(tmp_path / "ckpt"), str(out), "--int8"]) == 0
    assert out.is_file() and out.with_name("model.int8.onnx").is_file()
    text = capsys.readouterr().out
    assert "fp32 parity" in text and "int8" in text
    c, q, m = random_inputs(2, 4)
    p = OnnxPredictor(out.with_name("model.int8.onnx"), model.config, int8=True)
    assert cosine_min(p.predict(c, q, m)[0], EagerPredictor(model).predict(c, q, m)[0]) > 0.99


def test_export_leaves_the_callers_model_as_it_was(tmp_path: Path) -> None:
    """The export traces a CPU fp32 eval copy: a model in training mode (or fp16, or on a GPU) stays so."""
    m = tiny_model().train().to(torch.float64)
    export_onnx(m, tmp_path / "p.onnx")
    assert m.training
    assert {p.dtype for p in m.parameters()} == {torch.float64}


def test_make_backend_onnx_removes_its_temporary_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import tempfile

    from prime_retriever.backends.factory import make_backend

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp() creates its folder here
    m = tiny_model()
    backend = make_backend(m, "onnx")
    (folder,) = list(tmp_path.iterdir())
    c, q, mask = random_inputs(2, 4)
    np.testing.assert_allclose(backend.predict(c, q, mask)[0], EagerPredictor(m).predict(c, q, mask)[0], atol=1e-4)
    del backend
    gc.collect()
    assert not folder.exists()


def test_a_corrupted_graph_is_a_predictor_error(tmp_path: Path) -> None:
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf graph")
    with pytest.raises(PredictorError, match="cannot load the ONNX graph"):
        OnnxPredictor(bad, tiny_model().config)


def test_a_cut_short_cached_graph_is_rebuilt(tmp_path: Path) -> None:
    """A truncated <model>.int8.onnx / <model>.opt.onnx newer than the model (an interrupted earlier
    load) is not taken for a finished one: it is rebuilt, and the predictions are right."""
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.onnx")
    good = OnnxPredictor(path, model.config, int8=True)
    c, q, m = random_inputs(3, N_MAX)
    want, _ = good.predict(c, q, m)
    for cached in (tmp_path / "m.int8.onnx", tmp_path / "m.int8.opt.onnx"):
        assert cached.is_file()
        cached.write_bytes(cached.read_bytes()[:100])  # cut short, and newer than m.onnx
    again = OnnxPredictor(path, model.config, int8=True)
    np.testing.assert_allclose(again.predict(c, q, m)[0], want, atol=1e-5)


def test_a_graph_exported_for_another_config_is_refused_at_load(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.onnx")
    for other in (model.config.model_copy(update={"max_context_length": N_MAX * 2}),
                  model.config.model_copy(update={"input_dim": D * 2}),
                  model.config.model_copy(update={"output_dim": 8})):
        with pytest.raises(PredictorError, match=r"ONNX graph .* (does not fit its config|outputs shape)"):
            OnnxPredictor(path, other, optimize=False)
