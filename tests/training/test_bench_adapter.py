"""The linear adapter's files: a round trip, and typed errors for every way they can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prime_retriever.errors import CheckpointError
from training.bench.adapter import LinearAdapter, load_adapter, save_adapter
from training.bench.report import write_json

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    adapter = LinearAdapter(8)
    with torch.no_grad():
        adapter.linear.weight.add_(0.1 * torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))
    save_adapter(adapter, tmp_path / "adapter", ENCODER)
    return tmp_path / "adapter"


def test_round_trip(saved: Path) -> None:
    loaded = load_adapter(saved, ENCODER)
    x = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1).numpy()
    again = load_adapter(saved, ENCODER)
    assert (loaded.transform(x) == again.transform(x)).all()
    with pytest.raises(CheckpointError, match="trained for encoder"):
        load_adapter(saved, "other-encoder")


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
