from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from prime_retriever.errors import CheckpointError
from prime_retriever.model.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    DatasetInfo,
    EncoderInfo,
    Provenance,
    attach_score_confidence,
    checkpoint_size_bytes,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    verify_checkpoint,
)
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.model.score_confidence import ScoreConfidence

CFG = PredictorConfig(input_dim=32, output_dim=32, hidden_dim=64, num_layers=2, num_heads=4, max_context_length=4)


def trained_like_model() -> EmbeddingPredictor:
    torch.manual_seed(0)
    m = EmbeddingPredictor(CFG)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # no parameter left at its init value
    return m.eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(5, 4, 32, generator=g), torch.randn(5, 32, generator=g)


def test_checkpoint_save_load(tmp_path: Path) -> None:
    m = trained_like_model()
    prov = Provenance(datasets=[DatasetInfo(name="hotpotqa", n_examples=1249)], metrics={"val_mrr": 0.61})
    meta = save_checkpoint(m, tmp_path / "ck", encoder=EncoderInfo(name="minilm", dim=32), provenance=prov)
    loaded = load_checkpoint(tmp_path / "ck")
    ctx, q = inputs()
    assert torch.equal(loaded.model(ctx, q), m(ctx, q))  # bit-identical in fp32
    assert loaded.meta == meta and loaded.meta.config == CFG
    assert not loaded.model.training

    save_checkpoint(m, tmp_path / "ck16", dtype=torch.float16)
    half = load_checkpoint(tmp_path / "ck16")
    cos = F.cosine_similarity(half.model(ctx, q), m(ctx, q))
    assert (1 - cos).max() < 1e-2
    assert read_meta(tmp_path / "ck16").dtype == "float16"
    assert checkpoint_size_bytes(tmp_path / "ck16") < checkpoint_size_bytes(tmp_path / "ck") * 0.6


def test_bf16_and_from_checkpoint(tmp_path: Path) -> None:
    m = trained_like_model()
    save_checkpoint(m, tmp_path / "ck", dtype=torch.bfloat16)
    m2 = load_checkpoint(tmp_path / "ck").model
    ctx, q = inputs()
    assert (1 - F.cosine_similarity(m2(ctx, q), m(ctx, q))).max() < 1e-2


def test_meta_contents(tmp_path: Path) -> None:
    save_checkpoint(trained_like_model(), tmp_path, encoder=EncoderInfo(name="enc", dim=32))
    raw = json.loads((tmp_path / META_FILE).read_text())
    for key in (
        "format_version",
        "config",
        "package_version",
        "created_at",
        "weights_sha256",
        "dtype",
        "encoder",
        "provenance",
    ):
        assert key in raw
    assert raw["encoder"] == {"name": "enc", "dim": 32}


def test_provenance_rejects_examples() -> None:
    with pytest.raises(ValidationError):
        Provenance(examples=["who wrote X?"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Provenance(metrics={"q": "a training question"})


def test_encoder_dim_mismatch(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="dim 384"):
        save_checkpoint(trained_like_model(), tmp_path, encoder=EncoderInfo(name="enc", dim=384))


def test_no_pickle_on_disk(tmp_path: Path) -> None:
    save_checkpoint(trained_like_model(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_FILE, WEIGHTS_FILE]
    assert (tmp_path / WEIGHTS_FILE).read_bytes()[:2] != b"\x80\x04"  # not a pickle stream


# ----------------------------------------------------------------------------- corruption
@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    save_checkpoint(trained_like_model(), tmp_path / "ck")
    return tmp_path / "ck"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_missing_meta(ckpt: Path) -> None:
    (ckpt / META_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"no meta\.json"):
        load_checkpoint(ckpt)


def test_saving_the_same_model_gives_the_same_bytes(tmp_path: Path) -> None:
    """The benchmark compares checkpoints by sha256: the file must not depend on anything but the model
    (a two-key safetensors metadata map came out in a different order from save to save)."""
    import threading

    m = trained_like_model()
    shas: set[str] = set()

    def save(i: int) -> None:
        shas.add(save_checkpoint(m, tmp_path / f"ck{i}").weights_sha256)

    for i in range(8):  # each on a new thread, as Lightning's callbacks may run: the map's order was per thread
        t = threading.Thread(target=save, args=(i,))
        t.start()
        t.join()
    assert len(shas) == 1 and len(list(tmp_path.iterdir())) == 8


def test_missing_weights(ckpt: Path) -> None:
    (ckpt / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_checkpoint(ckpt)


def test_truncated_weights(ckpt: Path) -> None:
    w = ckpt / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(ckpt)


def test_bit_flip(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One flipped bit is refused by load, by verify and by ``info`` (which says "(verified)" otherwise)."""
    from prime_retriever.cli.main import main

    w = ckpt / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        verify_checkpoint(ckpt)
    for extra in ([], ["--json"]):
        assert main(["info", str(ckpt), *extra]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "sha256 mismatch" in err


def test_tampered_weights_with_forged_sha(ckpt: Path) -> None:
    """Replacing the weights and the recorded sha with those of an incompatible model is still refused."""
    other = EmbeddingPredictor(CFG.model_copy(update={"hidden_dim": 32}))
    save_checkpoint(other, ckpt.parent / "other")
    (ckpt / WEIGHTS_FILE).write_bytes((ckpt.parent / "other" / WEIGHTS_FILE).read_bytes())
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"] = read_meta(ckpt.parent / "other").weights_sha256
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config differs from the one saved with the weights in \['hidden_dim'"):
        load_checkpoint(ckpt)


def _without_header_config(ckpt: Path) -> None:
    """Rewrite the weights as a checkpoint saved before the config joined the safetensors header
    (meta.json's sha256 updated to match), so only meta.json describes the model."""
    from safetensors.torch import load_file, save_file

    from prime_retriever.model.checkpoint import FORMAT_NAME, sha256_file

    w = ckpt / WEIGHTS_FILE
    save_file(load_file(w), w, metadata={"format": FORMAT_NAME})
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"], meta["weights_bytes"] = sha256_file(w), w.stat().st_size
    (ckpt / META_FILE).write_text(json.dumps(meta))


def _edit_meta(ckpt: Path, **fields: object) -> None:
    meta = json.loads((ckpt / META_FILE).read_text())
    for key, value in fields.items():
        if key.startswith("config."):
            meta["config"][key.removeprefix("config.")] = value
        else:
            meta[key] = value
    (ckpt / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize("edit", [{"config.residual": True}, {"config.attention_layout": "prefix"},
                                  {"config.num_heads": 8}, {"config.dropout": 0.3}])
def test_a_meta_json_config_edit_that_keeps_the_shapes_is_refused(ckpt: Path, edit: dict[str, object]) -> None:
    """Each of these edits changes what the weights compute without changing one tensor's shape."""
    _edit_meta(ckpt, **edit)
    with pytest.raises(CheckpointError, match="config differs from the one saved with the weights"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(("edit", "message"), [
    ({"dtype": "float16"}, "says dtype 'float16', the weights are"),
    ({"num_parameters": 7}, "says 7 parameters, the weights hold"),
    ({"encoder": {"name": "minilm", "dim": 999}}, "has dim 999, the config expects"),
])
def test_meta_json_facts_must_match_the_weights(ckpt: Path, edit: dict[str, object], message: str) -> None:
    _edit_meta(ckpt, **edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(("edit", "message"), [
    ({"config.max_context_length": 10**12}, r"has shape \([\d, ]+\), the config expects \(1000000000000, "),
    # (a [10**12, H] table: refused before it is allocated)
    ({"config.hidden_dim": 2**40}, "does not describe a buildable model"),  # too large to describe at all
    ({"config.block_type": "llama", "config.llama_config": {"hidden_size": 64, "num_attention_heads": 0}},
     "does not describe a buildable model"),
])
def test_an_old_checkpoint_with_an_impossible_config_is_a_checkpoint_error(
    ckpt: Path, edit: dict[str, object], message: str
) -> None:
    _without_header_config(ckpt)
    assert load_checkpoint(ckpt).meta.config == CFG  # an old checkpoint, unedited, still loads
    _edit_meta(ckpt, **edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


def test_garbage_weights_with_matching_sha(ckpt: Path) -> None:
    from prime_retriever.model.checkpoint import sha256_file

    w = ckpt / WEIGHTS_FILE
    w.write_bytes(b"\xff" * 64)
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"] = sha256_file(w)
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(ckpt)


def test_unknown_format_version(ckpt: Path) -> None:
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["format_version"] = 99
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown format_version 99"):
        load_checkpoint(ckpt)


def test_corrupt_meta_json(ckpt: Path) -> None:
    (ckpt / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)


def test_deeply_nested_meta_json(ckpt: Path) -> None:
    (ckpt / META_FILE).write_text("[" * 200_000)  # json's recursion limit, not a parse error
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("where", ["../elsewhere.safetensors", "ABSOLUTE", "sub/model.safetensors", "model.pt"])
def test_weights_file_outside_the_checkpoint_is_refused(ckpt: Path, where: str) -> None:
    """meta.json may only name a weights file inside CKPT/: weights moved elsewhere (with their true
    sha256) and pointed at by an edited meta.json are not loaded."""
    outside = ckpt.parent / "elsewhere.safetensors"
    outside.write_bytes((ckpt / WEIGHTS_FILE).read_bytes())
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_file"] = str(outside.resolve()) if where == "ABSOLUTE" else where
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights_file"):
        load_checkpoint(ckpt)


def test_config_shape_mismatch(ckpt: Path) -> None:
    # (the message is matched in full: the test's own tmp path holds the word "shape")
    _edit_meta(ckpt, **{"config.hidden_dim": 128})
    with pytest.raises(CheckpointError, match=r"config differs from the one saved with the weights in \['hidden_dim'"):
        load_checkpoint(ckpt)
    _without_header_config(ckpt)  # an older checkpoint: only the tensors' shapes can tell
    with pytest.raises(CheckpointError, match=r"has shape \([\d, ]+\), the config expects \("):
        load_checkpoint(ckpt)


def test_invalid_config_in_meta(ckpt: Path) -> None:
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["config"]["num_layers"] = 0
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"(?s)meta\.json is invalid: .*num_layers"):
        load_checkpoint(ckpt)


def test_bad_dtype(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="dtype"):
        save_checkpoint(trained_like_model(), tmp_path, dtype=torch.int8)


def test_score_confidence_travels_in_the_hashed_header_and_an_edit_is_refused(tmp_path: Path) -> None:
    m = trained_like_model()
    plain = save_checkpoint(m, tmp_path / "ck", encoder=EncoderInfo(name="minilm", dim=32),
                            provenance=Provenance(metrics={"val_mrr": 0.5}))
    assert plain.score_confidence is None
    sc = ScoreConfidence(top_weight=3.0, margin_weight=20.0, bias=-2.0, n_fitted=100, hit_rate=0.6)
    meta = attach_score_confidence(tmp_path / "ck", sc)
    assert meta.score_confidence == sc and meta.weights_sha256 != plain.weights_sha256
    assert (meta.encoder, meta.provenance, meta.config) == (plain.encoder, plain.provenance, plain.config)
    loaded = load_checkpoint(tmp_path / "ck")
    ctx, q = inputs()
    assert loaded.meta.score_confidence == sc and torch.equal(loaded.model(ctx, q), m(ctx, q))

    meta_path = tmp_path / "ck" / META_FILE
    edited = json.loads(meta_path.read_text())
    edited["score_confidence"]["bias"] = 5.0  # a tampered calibration: every search would look confident
    meta_path.write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match="its score_confidence differs from the one saved with the weights"):
        load_checkpoint(tmp_path / "ck")
    edited["score_confidence"] = None  # dropped from meta.json while the weights carry one
    meta_path.write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match="its score_confidence differs"):
        load_checkpoint(tmp_path / "ck")

    save_checkpoint(m, tmp_path / "ck2")  # weights without one, meta.json given one
    raw = json.loads((tmp_path / "ck2" / META_FILE).read_text())
    raw["score_confidence"] = sc.model_dump(mode="json")
    (tmp_path / "ck2" / META_FILE).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="its score_confidence differs"):
        load_checkpoint(tmp_path / "ck2")
    raw["score_confidence"]["top_weight"] = "NaN"
    (tmp_path / "ck2" / META_FILE).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="is invalid"):
        read_meta(tmp_path / "ck2")
