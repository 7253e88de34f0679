from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prime_retriever.cli.main import main
from prime_retriever.model.checkpoint import attach_score_confidence, load_checkpoint, save_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.model.score_confidence import ScoreConfidence

CFG = PredictorConfig(input_dim=16, output_dim=16, hidden_dim=32, num_layers=1, num_heads=2, max_context_length=3)


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(EmbeddingPredictor(CFG), tmp_path / "ck")
    return tmp_path / "ck"


def test_info(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "sha256:" in out and "(verified)" in out and "hidden_dim: 32" in out
    assert "confidence:   the predictor head (no search-score calibration)" in out
    sc = ScoreConfidence(top_weight=1.5, margin_weight=12.0, bias=-1.25, n_fitted=300, hit_rate=0.6)
    attach_score_confidence(ckpt, sc)
    assert main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "confidence:   sigmoid(1.500 * s1 + 12.000 * (s1 - s2) - 1.250), fitted on 300 validation questions" in out
    assert main(["info", str(ckpt), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size_bytes"] > 0 and data["config"]["hidden_dim"] == 32


def test_predict_stdin_stdout(ckpt: Path) -> None:
    payload = json.dumps({"context_embeddings": [[0.1] * 16, [0.2] * 16], "query_embedding": [0.3] * 16})
    r = subprocess.run(
        [sys.executable, "-m", "prime_retriever.cli.main", "predict", "--checkpoint", str(ckpt)],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(r.stdout)
    assert len(out["predicted_embedding"]) == 16
    assert abs(sum(x * x for x in out["predicted_embedding"]) - 1) < 1e-4
    assert 0 <= out["confidence"] <= 1


def test_predict_rejects_bad_input(ckpt: Path) -> None:
    payload = json.dumps({"context_embeddings": [], "query_embedding": [0.3] * 16})
    r = subprocess.run(
        [sys.executable, "-m", "prime_retriever.cli.main", "predict", "--checkpoint", str(ckpt)],
        input=payload,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "cannot be empty" in r.stderr


@pytest.mark.parametrize(("payload", "message"), [
    ({"context_embeddings": [[0.5] * 16], "query_embedding": [0.25] * 16, "context_mask": [False]},
     "context_mask"),  # a field the schema does not have is refused, not dropped
    ({"context_embeddings": [["0.5"] * 16], "query_embedding": [0.25] * 16}, "valid number"),
    ({"context_embeddings": [[0.5] * 16], "query_embedding": [True] * 16}, "valid number"),
])
def test_predict_refuses_unknown_fields_and_numbers_in_disguise(
    ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], payload: object, message: str
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(payload)))
    assert main(["predict", "--checkpoint", str(ckpt)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and message in err and "Traceback" not in err


def test_default_fp16_checkpoint_under_500mb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(EmbeddingPredictor(PredictorConfig()), tmp_path / "big", dtype=torch.float16)
    assert main(["info", str(tmp_path / "big"), "--json"]) == 0
    size = json.loads(capsys.readouterr().out)["size_bytes"]
    assert size < 500e6


def test_predict_in_process(ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    payload = {"context_embeddings": [[0.5] * 16], "query_embedding": [0.25] * 16}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(payload)))
    assert main(["predict", "--checkpoint", str(ckpt)]) == 0
    out = json.loads(capsys.readouterr().out)
    model = load_checkpoint(ckpt).model
    ctx, q = torch.tensor([payload["context_embeddings"]]), torch.tensor([payload["query_embedding"]])
    # the vectors reach the model as unit rows, as search() sends them
    expected = model(ctx / ctx.norm(dim=-1, keepdim=True), q / q.norm(dim=-1, keepdim=True))
    assert torch.allclose(torch.tensor(out["predicted_embedding"]), expected[0], atol=1e-6)


def test_typed_errors_become_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prime-retriever info: error: checkpoint directory not found") and "Traceback" not in err
