"""The linear adapter's files: a round trip, and typed errors for every way they can be wrong."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prime_retriever.errors import CheckpointError
from training.bench.adapter import LinearAdapter, load_adapter, save_adapter, train_adapter
from training.bench.report import write_json
from training.module import evaluate_retrieval
from training.training_set import TrainingSet

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def _perturbed(dim: int = 8) -> LinearAdapter:
    adapter = LinearAdapter(dim)
    with torch.no_grad():
        adapter.linear.weight.add_(0.1 * torch.randn(dim, dim, generator=torch.Generator().manual_seed(0)))
    return adapter


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    save_adapter(_perturbed(), tmp_path / "adapter", ENCODER)
    return tmp_path / "adapter"


def test_round_trip(saved: Path) -> None:
    x = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1).numpy()  # 3 × 8 unit rows
    loaded = load_adapter(saved, ENCODER).transform(x)
    np.testing.assert_array_equal(loaded, _perturbed().transform(x))  # the saved weights, not fresh ones
    assert not np.allclose(loaded, x, atol=1e-3)  # and not the identity
    with pytest.raises(CheckpointError, match="trained for encoder"):
        load_adapter(saved, "other-encoder")
    # the same model on another path (its fast int8 vectors) serves the adapter; another model does not
    np.testing.assert_allclose(load_adapter(saved, ENCODER + "+onnx-int8").transform(x), loaded, rtol=1e-6)


def _rotated_queries(n: int, corpus: torch.Tensor, seed: int) -> TrainingSet:
    """Queries that are a fixed linear mix of their gold document plus noise: the identity ranks them
    poorly, a D×D map can undo the mix."""
    g = torch.Generator().manual_seed(seed)
    c, d = corpus.shape
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(99))  # D × D, the same on both sides
    gold = torch.randint(0, c, (n,), generator=g)  # n
    query = F.normalize(corpus[gold] @ mix.T + 0.05 * torch.randn(n, d, generator=g), dim=-1)  # n × D
    return TrainingSet(context=query[:, None], context_mask=torch.ones(n, 1, dtype=torch.bool), query=query,
                       gold=gold[:, None], negatives=torch.full((n, 1), -1), excluded=torch.full((n, 1), -1),
                       corpus=corpus, corpus_ids=[f"d{i}" for i in range(c)])


def test_train_adapter_learns_a_map_and_keeps_its_best_epoch() -> None:
    corpus = F.normalize(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)), dim=-1)  # C × D
    train, val = _rotated_queries(512, corpus, 1), _rotated_queries(128, corpus, 2)
    identity = evaluate_retrieval(None, val)["mrr"]
    res = train_adapter(train, val, lr=1e-2, batch_size=32, max_epochs=8, patience=3)
    assert res.val_mrr > identity + 0.2 and 1 <= res.epochs <= 8
    kept = evaluate_retrieval(None, replace(val, query=torch.as_tensor(res.adapter.transform(val.query.numpy()))))
    assert kept["mrr"] == pytest.approx(res.val_mrr, abs=1e-5)  # the returned weights are the scored ones
    # without validation it trains every epoch and keeps the last weights
    last = train_adapter(train, None, lr=1e-2, batch_size=32, max_epochs=2)
    assert last.epochs == 2 and not torch.allclose(last.adapter.linear.weight, torch.eye(16))


@pytest.mark.parametrize(("meta", "message"), [
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"encoder": ENCODER}), "'dim' must be a positive integer"),
    (json.dumps({"encoder": ENCODER, "dim": "8"}), "'dim' must be a positive integer"),
    (json.dumps({"encoder": ENCODER, "dim": 16}), "does not match its dim 16"),
    ("{oops", "cannot read the linear adapter"),
])
def test_a_malformed_adapter_is_a_checkpoint_error(saved: Path, meta: str, message: str) -> None:
    (saved / "adapter.json").write_text(meta)
    with pytest.raises(CheckpointError, match=message):
        load_adapter(saved, ENCODER)


def test_truncated_adapter_weights_are_a_checkpoint_error(saved: Path) -> None:
    w = saved / "adapter.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot read the linear adapter"):
        load_adapter(saved, ENCODER)


def test_write_json_replaces_the_report_whole(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_json({"a": float("nan"), "b": [1.5]}, path)
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5]}
    with pytest.raises(TypeError):
        write_json({"a": object()}, path)  # not serialisable: the previous report stays as it was
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5]}
