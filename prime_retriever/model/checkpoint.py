"""Versioned, checksummed predictor checkpoints (SEC-PRED-001, SEC-PRED-002).

A checkpoint is a directory::

    CKPT/
      model.safetensors   # the weights; safetensors never executes code on load
      meta.json           # format version, PredictorConfig, sha256 of the weights, dtype,
                          # Y-Encoder name and dims, provenance (dataset names and sizes, metrics)

``meta.json`` holds no training example: :class:`Provenance` only admits dataset names, sizes,
metrics and hyper-parameters (SEC-PRED-002).

The weights file's header carries the config too, so the sha256 covers it: :func:`load_checkpoint`
refuses a ``meta.json`` whose config, dtype, parameter count or encoder dim disagrees with the
weights (a checkpoint saved before the header held the config is checked on shapes only), and it
sizes the model on the ``meta`` device before it allocates anything.
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
from prime_retriever.errors import CheckpointError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.model.score_confidence import ScoreConfidence

FORMAT_NAME = "prime-retriever-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"

HEADER_KEY = "prime_retriever"  # safetensors header metadata: {"format", "config"} as one JSON string
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
    score_confidence: ScoreConfidence | None = None  # fitted on validation after training; None before


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
    score_confidence: ScoreConfidence | None = None,
) -> CheckpointMeta:
    """Write ``model`` to the directory ``path`` (created if needed), weights stored in ``dtype``.

    ``score_confidence``, the search-score calibration (:mod:`prime_retriever.model.score_confidence`),
    is saved in the hashed weights header as well as in ``meta.json``, like the config.
    """
    names = {v: k for k, v in _DTYPES.items()}
    if dtype not in names:
        raise CheckpointError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype}")
    if encoder is not None and encoder.dim not in (model.config.input_dim, model.config.output_dim):
        raise CheckpointError(
            f"encoder {encoder.name!r} has dim {encoder.dim}, the model expects "
            f"input_dim={model.config.input_dim} / output_dim={model.config.output_dim}"
        )
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # an existing file at or above ``path``, or no permission
        raise CheckpointError(f"cannot create the checkpoint directory {out}: {e}") from e
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{WEIGHTS_FILE}.")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # the config travels inside the hashed weights file too, so an edited meta.json is caught on load.
        # One metadata key: safetensors writes its metadata map in no fixed order, so two keys would
        # make two saves of the same weights differ byte for byte (and in sha256)
        saved: dict[str, Any] = {"format": FORMAT_NAME, "config": model.config.model_dump(mode="json")}
        if score_confidence is not None:  # absent otherwise: a checkpoint without one hashes as before
            saved["score_confidence"] = score_confidence.model_dump(mode="json")
        save_file(state, tmp, metadata={HEADER_KEY: json.dumps(saved, sort_keys=True)})
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        meta = _meta(model, tmp, names[dtype], encoder, provenance, needs_reindex, y_encoder_dir, score_confidence)
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
    score_confidence: ScoreConfidence | None,
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
        score_confidence=score_confidence,
    )


def attach_score_confidence(
    checkpoint: str | Path | LoadedCheckpoint, score_confidence: ScoreConfidence | None
) -> CheckpointMeta:
    """Re-save the (verified) checkpoint with ``score_confidence``; the weights are unchanged.

    ``checkpoint``: its directory, or the :class:`LoadedCheckpoint` already read from it (not read
    again). Its encoder, provenance and Y-Encoder fields are kept; the weights file's sha256
    changes, since its header now holds the calibration.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    meta = loaded.meta
    return save_checkpoint(
        loaded.model, loaded.path, dtype=_DTYPES[meta.dtype], encoder=meta.encoder, provenance=meta.provenance,
        needs_reindex=meta.needs_reindex, y_encoder_dir=meta.y_encoder_dir, score_confidence=score_confidence,
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


def _checked_state(path: str | Path) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """``meta.json`` and the weights' tensors, after every check that loading makes, short of building the model:
    the sha256, the safetensors format, meta.json against the weights' own header, and each tensor's
    name and shape against the config (on the meta device: a config asking for huge tensors allocates
    nothing). The weights are read once: the bytes whose sha256 was checked are the bytes parsed."""
    meta, weights, data = _verified_weights(path)
    try:
        state = load_safetensors(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} cannot be read as safetensors: {e}") from e
    _check_meta_against_weights(meta, weights, data, state)
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in EmbeddingPredictor(meta.config).state_dict().items()}
    except Exception as e:  # e.g. a llama_config that transformers refuses, or one that divides by zero
        raise CheckpointError(f"{weights}: its config does not describe a buildable model: {e!r}") from e
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(
                f"{weights}: {name} has shape {tuple(tensor.shape)}, the config expects {expected[name]}"
            )
    return meta, state


def verify_checkpoint(path: str | Path) -> CheckpointMeta:
    """Run every check :func:`load_checkpoint` runs (sha256, format, meta against weights, shapes); its meta."""
    return _checked_state(path)[0]


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedCheckpoint:
    """Verify and load a checkpoint; the model is built from ``meta.json`` alone, in eval mode.

    The checks are :func:`verify_checkpoint`'s, on the same bytes as the tensors loaded.
    """
    meta, state = _checked_state(path)
    model = EmbeddingPredictor(meta.config)  # every tensor it allocates is one the file holds
    target = model.state_dict()
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()})
    model.to(device=device, dtype=dtype).eval()
    return LoadedCheckpoint(model=model, meta=meta, path=Path(path))


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header (already known to parse)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    found = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _check_meta_against_weights(
    meta: CheckpointMeta, weights: Path, data: bytes, state: dict[str, torch.Tensor]
) -> None:
    """Refuse a ``meta.json`` that says something else than the (hash-checked) weights file does."""
    saved = _header_metadata(data).get(HEADER_KEY)
    if saved is not None:  # written by every save since the config joined the header
        try:
            header = json.loads(saved)
            config = PredictorConfig.model_validate(header["config"])
            calibration = header.get("score_confidence")
            score_confidence = None if calibration is None else ScoreConfidence.model_validate(calibration)
        except (ValidationError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{weights}: the metadata saved with the weights is unreadable: {e}") from e
        if score_confidence != meta.score_confidence:
            raise CheckpointError(
                f"{weights.parent / META_FILE}: its score_confidence differs from the one saved with the weights; "
                "meta.json was edited or belongs to other weights"
            )
        if config != meta.config:
            changed = sorted(k for k, v in config.model_dump().items() if meta.config.model_dump().get(k) != v)
            raise CheckpointError(
                f"{weights.parent / META_FILE}: its config differs from the one saved with the weights in {changed}; "
                "meta.json was edited or belongs to other weights"
            )
    floats = {t.dtype for t in state.values() if t.is_floating_point()}
    if floats and floats != {_DTYPES.get(meta.dtype)}:
        raise CheckpointError(
            f"{weights}: meta.json says dtype {meta.dtype!r}, the weights are {sorted(map(str, floats))}"
        )
    count = sum(t.numel() for t in state.values())
    if count != meta.num_parameters:
        raise CheckpointError(f"{weights}: meta.json says {meta.num_parameters} parameters, the weights hold {count}")
    enc = meta.encoder
    if enc is not None and enc.dim not in (meta.config.input_dim, meta.config.output_dim):
        raise CheckpointError(
            f"{weights.parent / META_FILE}: encoder {enc.name!r} has dim {enc.dim}, the config expects "
            f"input_dim={meta.config.input_dim} / output_dim={meta.config.output_dim}"
        )


def checkpoint_size_bytes(path: str | Path) -> int:
    """Total size of the files in the checkpoint directory."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
