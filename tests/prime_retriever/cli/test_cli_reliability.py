"""Issue 30: info runs the checks of loading; predict validates vectors as the API does; train --out at a file."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from prime_retriever.cli.main import main
from prime_retriever.errors import CheckpointError
from prime_retriever.model.checkpoint import META_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint, sha256_file
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

CFG = PredictorConfig(input_dim=16, output_dim=16, hidden_dim=32, num_layers=1, num_heads=2, max_context_length=3,
                      use_torch_compile=False)


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(EmbeddingPredictor(CFG), tmp_path / "ck")
    return tmp_path / "ck"


def _forge_sha(ckpt: Path) -> None:
    """Record the weights file's current sha256 in meta.json, as a forger (or a careless copy) would."""
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"] = sha256_file(ckpt / WEIGHTS_FILE)
    (ckpt / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["pickle", "truncated"])
def test_info_refuses_what_loading_refuses(ckpt: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    w = ckpt / WEIGHTS_FILE
    if damage == "pickle":  # a pickle disguised as model.safetensors
        w.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    else:
        w.write_bytes(w.read_bytes()[:-64])
    _forge_sha(ckpt)
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)
    for extra in ([], ["--json"]):
        assert main(["info", str(ckpt), *extra]) == 1  # "(verified)" and exit 0, before
        out, err = capsys.readouterr()
        assert out == "" and "verified" not in out and str(w) in err


def _predict(ckpt: Path, payload: object, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(payload)))
    return main(["predict", "--checkpoint", str(ckpt)])


def test_predict_normalises_huge_values_and_refuses_zero_vectors_as_the_api_does(
    ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    ctx, q = rng.normal(size=(2, 16)), rng.normal(size=16)
    assert _predict(ckpt, {"context_embeddings": ctx.tolist(), "query_embedding": q.tolist()}, monkeypatch) == 0
    ref = json.loads(capsys.readouterr().out)["predicted_embedding"]
    big = 3e38 / np.abs(np.concatenate([ctx.ravel(), q])).max()  # the largest value becomes 3e38
    payload = {"context_embeddings": (ctx * big).tolist(), "query_embedding": (q * big).tolist()}
    assert _predict(ckpt, payload, monkeypatch) == 0  # "predicted_embedding contains NaN or Inf", before
    np.testing.assert_allclose(json.loads(capsys.readouterr().out)["predicted_embedding"], ref, atol=1e-5)
    assert _predict(ckpt, {"context_embeddings": ctx.tolist(), "query_embedding": [0.0] * 16}, monkeypatch) == 1
    out, err = capsys.readouterr()
    assert out == "" and "query_embedding contains an all-zero embedding" in err  # accepted, before
    zero_turn = [ctx[0].tolist(), [0.0] * 16]
    assert _predict(ckpt, {"context_embeddings": zero_turn, "query_embedding": q.tolist()}, monkeypatch) == 1
    assert "context_embeddings contains an all-zero embedding" in capsys.readouterr().err


def test_train_out_at_an_existing_file_exits_2_with_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("mine")
    for out in (tmp_path / "taken", tmp_path / "taken" / "ckpt"):
        with pytest.raises(SystemExit) as exc:  # a raw FileExistsError traceback, after loading the data, before
            main(["train", "--data", str(tmp_path / "none.jsonl"), "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--out" in err and "file" in err and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "mine"
    with pytest.raises(CheckpointError, match="cannot create the checkpoint directory"):
        save_checkpoint(EmbeddingPredictor(CFG), tmp_path / "taken")


@pytest.mark.parametrize("kind", ["local", "edge"])
def test_index_into_a_store_that_cannot_be_created_is_one_line(tmp_path: Path, kind: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "c.jsonl").write_text('{"id": "a", "text": "hello world"}\n')
    rc = main(["index", "--corpus", str(tmp_path / "c.jsonl"), "--store", kind, "--path",
               str(tmp_path / "afile" / "store"), "--encoder", "eager", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1  # a raw NotADirectoryError traceback from local mode, before
    assert "cannot" in err and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "mine"
