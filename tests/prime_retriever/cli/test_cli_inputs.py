"""Bad command-line input: refused up front with one line, and nothing half-written is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prime_retriever.cli.main import build_parser, main
from prime_retriever.model.checkpoint import save_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.retrieval.link_graph import LinkGraph

CFG = PredictorConfig(input_dim=16, output_dim=16, hidden_dim=32, num_layers=1, num_heads=2, max_context_length=3,
                      use_torch_compile=False)


def _corpus(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("argv", [
    ["index", "--corpus", "c.jsonl", "--batch-size", "0"],
    ["links", "c.jsonl", "--out", "g.json", "--max-links", "0"],
    ["bench-retriever", "--callers", "0"],
    ["bench-retriever", "--throughput-calls", "0"],
    ["bench-retriever", "--max-docs", "-5"],
    ["bench-retriever", "-k", "0"],
    ["bench-retriever", "--json", "no_such_dir/rb.json"],
    ["bench-retriever", "--threshold", "5"],
    ["bench-retriever", "--threshold", "nan"],
    ["bench-latency", "--threads", "0"],
    ["bench-latency", "--out", "no_such_dir/lat.json"],
])
def test_bad_numbers_and_unwritable_reports_exit_2_before_any_work(argv: list[str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser(load=[argv[0]]).parse_args(argv)
    assert exc.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_index_refuses_a_store_typo_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    corpus = _corpus(tmp_path / "c.jsonl", [{"id": "a", "text": "Alpha."}])
    assert main(["index", "--corpus", str(corpus), "--store", "lcoal", "--path", "idx"]) == 1
    assert "expected local, edge" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]  # no ./lcoal, no idx
    assert main(["index", "--corpus", str(corpus), "--store", "local", "--path", str(corpus)]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["index", "--corpus", str(corpus), "--store", "edge:elsewhere", "--path", "idx"]) == 1
    assert "names its own location" in capsys.readouterr().err


def test_a_failed_index_leaves_no_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = _corpus(tmp_path / "c.jsonl", [{"id": "a", "text": "Alpha."}])
    rc = main(["index", "--corpus", str(corpus), "--store", "local", "--path", str(tmp_path / "idx"),
               "--encoder", str(tmp_path / "no_such_model"), "--no-progress"])
    assert rc == 1 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_export_onnx_refuses_a_nan_model_and_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = EmbeddingPredictor(CFG)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # a diverged run: the sha256 is valid, the weights are not
    save_checkpoint(model, tmp_path / "ck")
    out = tmp_path / "onnx" / "m.onnx"
    assert main(["export-onnx", str(tmp_path / "ck"), str(out)]) == 1
    assert "parity check failed" in capsys.readouterr().err
    assert list((tmp_path / "onnx").iterdir()) == []  # nothing renamed into place, no work folder left
    assert main(["export-onnx", str(tmp_path / "ck"), str(tmp_path / "onnx")]) == 1  # a directory
    assert "is a directory" in capsys.readouterr().err
    assert main(["export-onnx", str(tmp_path / "ck"), str(out), "--opset", "99"]) == 1  # was a raw RuntimeError
    assert "ONNX export at opset 99 failed" in capsys.readouterr().err
    assert list((tmp_path / "onnx").iterdir()) == []
    (tmp_path / "afile").write_text("")
    assert main(["export-onnx", str(tmp_path / "ck"), str(tmp_path / "afile" / "m.onnx")]) == 1  # under a file
    assert "cannot write" in capsys.readouterr().err


def test_links_and_index_refuse_a_repeated_id_naming_its_line_as_train_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = _corpus(tmp_path / "c.jsonl", [
        {"id": "a", "title": "Alpha Centauri", "text": "Alpha Centauri is near Barnard Star."},
        {"id": "b", "title": "Barnard Star", "text": "Barnard Star is a red dwarf."},
        {"id": "c", "title": "Sirius", "text": "Sirius is bright."},
        {"id": "a", "title": "Something else", "text": "It mentions Sirius only."},
    ])
    assert main(["links", str(corpus), "--out", str(tmp_path / "g.json")]) == 1  # kept the first, exit 0, before
    assert f"{corpus}:4: duplicate document id 'a' (first on line 1)" in capsys.readouterr().err
    assert main(["index", "--corpus", str(corpus), "--store", "local", "--path", str(tmp_path / "st")]) == 1
    assert f"{corpus}:4: duplicate document id 'a'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]  # no graph, no store
    corpus = _corpus(tmp_path / "c.jsonl", [
        {"id": "a", "title": "Alpha Centauri", "text": "Alpha Centauri is near Barnard Star."},
        {"id": "b", "title": "Barnard Star", "text": "Barnard Star is a red dwarf."},
    ])
    assert main(["links", str(corpus), "--out", str(tmp_path / "g.json")]) == 0
    graph = LinkGraph.load(tmp_path / "g.json")
    assert graph.links == {"a": ("b",)}
    (tmp_path / "dir").mkdir()
    assert main(["links", str(corpus), "--out", str(tmp_path / "dir")]) == 1  # raw IsADirectoryError before
    assert "cannot write the link graph" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "dir", "g.json"]  # no temporary file left


def test_errors_print_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    save_checkpoint(EmbeddingPredictor(CFG), tmp_path / "ck")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # empty input: pydantic's report is several lines
    assert main(["predict", "--checkpoint", str(tmp_path / "ck")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prime-retriever predict: error: ")


def test_a_checkpoint_with_a_nan_metric_loads_and_info_json_writes_null(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from prime_retriever.model.checkpoint import Provenance, load_checkpoint

    # a run whose validation diverged: saving used to write null, which loading then refused
    save_checkpoint(EmbeddingPredictor(CFG), tmp_path / "ck", provenance=Provenance(metrics={"recall": float("nan")}))
    assert load_checkpoint(tmp_path / "ck").meta.provenance.metrics == {"recall": None}
    assert main(["info", str(tmp_path / "ck")]) == 0
    assert "recall: not finite" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "ck"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-standard JSON: {c}"))
    assert data["provenance"]["metrics"]["recall"] is None
