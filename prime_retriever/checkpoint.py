"""Versioned, checksummed predictor checkpoints (SEC-PRED-001, SEC-PRED-002).

A checkpoint is a directory::

    CKPT/
      model.safetensors   # the weights; safetensors never executes code on load
      meta.json           # format version, PredictorConfig, sha256 of the weights, dtype,
                          # Y-Encoder name and dims, provenance (dataset names and sizes, metrics)

``meta.json`` holds no training example: :class:`Provenance` only admits dataset names, sizes,
metrics and hyper-parameters (SEC-PRED-002).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from prime_retriever.atomic_file import write_bytes_atomic
from prime_retriever.config import PredictorConfig
from prime_retriever.errors import CheckpointError
from prime_retriever.predictor import EmbeddingPredictor

FORMAT_NAME = "prime-retriever-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DatasetInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(max_length=200)
    split: str = Field(default="train", max_length=50)
    n_examples: int = Field(ge=0)


class Provenance(BaseModel):
    """Where the weights came from: names, sizes and numbers only, never examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    datasets: list[DatasetInfo] = Field(default_factory=list)
    metrics: dict[str, float | None] = Field(default_factory=dict)  # None: not finite (a run that diverged)
    hyperparameters: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    recipe: str = Field(default="", max_length=2000)

    @field_validator("metrics", mode="before")
    @classmethod
    def _finite_or_none(cls, value: Any) -> Any:
        # JSON has no NaN: stored as null, so a checkpoint whose metric diverged still loads
        if isinstance(value, dict):
            return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in value.items()}
        return value


class EncoderInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    dim: int = Field(ge=1)


class CheckpointMeta(BaseModel):
    """The validated content of ``meta.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str
    format_version: int
    package_version: str
    created_at: str
    config: PredictorConfig
    weights_file: str = Field(default=WEIGHTS_FILE, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*\.safetensors$")  # in CKPT/
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights_bytes: int = Field(ge=0)
    dtype: str
    num_parameters: int = Field(ge=0)
    encoder: EncoderInfo | None = None
    provenance: Provenance = Field(default_factory=Provenance)
    needs_reindex: bool = False
    y_encoder_dir: str | None = None


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: EmbeddingPredictor
    meta: CheckpointMeta
    path: Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    model: EmbeddingPredictor,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    encoder: EncoderInfo | None = None,
    provenance: Provenance | None = None,
    needs_reindex: bool = False,
    y_encoder_dir: str | None = None,
) -> CheckpointMeta:
    """Write ``model`` to the directory ``path`` (created if needed), weights stored in ``dtype``."""
    names = {v: k for k, v in _DTYPES.items()}
    if dtype not in names:
        raise CheckpointError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype}")
    if encoder is not None and encoder.dim not in (model.config.input_dim, model.config.output_dim):
        raise CheckpointError(
            f"encoder {encoder.name!r} has dim {encoder.dim}, the model expects "
            f"input_dim={model.config.input_dim} / output_dim={model.config.output_dim}"
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{WEIGHTS_FILE}.")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_file(state, tmp, metadata={"format": FORMAT_NAME})
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        meta = _meta(model, tmp, names[dtype], encoder, provenance, needs_reindex, y_encoder_dir)
        # the new weights and their meta replace the old ones back to back (both already on disk)
        os.replace(tmp, out / WEIGHTS_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_bytes_atomic(out / META_FILE, meta.model_dump_json(indent=2).encode())
    return meta


def _meta(
    model: EmbeddingPredictor, weights: Path, dtype: str, encoder: EncoderInfo | None,
    provenance: Provenance | None, needs_reindex: bool, y_encoder_dir: str | None,
) -> CheckpointMeta:
    from prime_retriever import __version__

    return CheckpointMeta(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        package_version=__version__,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        config=model.config,
        weights_sha256=sha256_file(weights),
        weights_bytes=weights.stat().st_size,
        dtype=dtype,
        num_parameters=model.num_parameters(),
        encoder=encoder,
        provenance=provenance or Provenance(),
        needs_reindex=needs_reindex,
        y_encoder_dir=y_encoder_dir,
    )


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate ``meta.json`` (no weights are touched)."""
    root = Path(path)
    meta_path = root / META_FILE
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {root}")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {root} has no {META_FILE}")
    try:
        raw: Any = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON: {e!r}") from e
    except OSError as e:
        raise CheckpointError(f"{meta_path} cannot be read: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_path} is not a {FORMAT_NAME} file")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: unknown format_version {raw.get('format_version')!r}; "
            f"this prime_retriever reads version {FORMAT_VERSION}"
        )
    try:
        return CheckpointMeta.model_validate(raw)
    except ValidationError as e:
        raise CheckpointError(f"{meta_path} is invalid: {e}") from e


def _verified_weights(path: str | Path) -> tuple[CheckpointMeta, Path, bytes]:
    """``meta.json``, the weights' path and their bytes, read once and checked against the recorded sha256."""
    meta = read_meta(path)
    weights = Path(path) / meta.weights_file
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {path} has no weights file {meta.weights_file}")
    try:
        data = weights.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{weights} cannot be read: {e}") from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != meta.weights_sha256:
        raise CheckpointError(
            f"{weights}: sha256 mismatch (expected {meta.weights_sha256}, got {actual}); "
            "the weights are corrupted or were modified"
        )
    return meta, weights, data


def verify_checkpoint(path: str | Path) -> CheckpointMeta:
    """Check that the weights file exists and matches the sha256 recorded in ``meta.json``."""
    return _verified_weights(path)[0]


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedCheckpoint:
    """Verify and load a checkpoint; the model is built from ``meta.json`` alone, in eval mode.

    The weights are read once: the bytes whose sha256 was checked are the bytes loaded.
    """
    meta, weights, data = _verified_weights(path)
    try:
        state = load_safetensors(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} cannot be read as safetensors: {e}") from e
    model = EmbeddingPredictor(meta.config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{weights}: {name} has shape {tuple(tensor.shape)}, the config expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.to(device=device, dtype=dtype).eval()
    return LoadedCheckpoint(model=model, meta=meta, path=Path(path))


def checkpoint_size_bytes(path: str | Path) -> int:
    """Total size of the files in the checkpoint directory."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
