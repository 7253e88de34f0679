"""Pick the encoder path: ``encoder="fast"`` takes the fastest one that is as good as fp32 eager, on this machine.

Paths for a sentence-transformers folder (the bundled all-MiniLM-L6-v2 by default):

* ``eager``: :class:`~prime_retriever.text.encoders.HFTextEncoder` (transformers, fp32): the reference;
* ``onnx-fp32``: the folder exported to ONNX once (:func:`~prime_retriever.text.onnx_export.exported_encoder`),
  run by onnxruntime with length-aware batching;
* ``onnx-int8``: the same graph dynamically quantised (7-bit weights: no saturation without VNNI).

``fast`` encodes :data:`~prime_retriever.text.calibration_texts.CALIBRATION_TEXTS` with eager and with
each ONNX path, fastest first, and takes the first whose cosine to eager is at least
:attr:`FastPolicy.cosine_mean` on average and :attr:`FastPolicy.cosine_min` on its worst text; if
none passes it is eager. The scores are kept beside the export (keyed by the onnxruntime version,
the CPU's VNNI flag and the policy), so later processes choose without loading torch. No accuracy
is traded silently: a path that fails the check on a machine is never chosen there.

Every path's encoder has its own :attr:`name` (``model+backend``; eager keeps the bare model name),
so its embeddings get their own cache key and a collection records which path built it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from prime_retriever.atomic_file import write_bytes_atomic
from prime_retriever.errors import EncoderError
from prime_retriever.text.calibration_texts import CALIBRATION_TEXTS
from prime_retriever.text.encoders import (
    FloatMatrix,
    HFTextEncoder,
    TextEncoder,
    default_encoder_path,
    model_name_of,
    weights_fingerprint,
)
from prime_retriever.text.onnx_encoder import (
    EncoderFormat,
    EncoderIdentity,
    OnnxTextEncoder,
    RuntimeOptions,
    cpu_has_vnni,
)
from prime_retriever.text.onnx_export import exported_encoder
from prime_retriever.text.packaged_models import PACKAGED_MODELS, load_packaged_encoder

__all__ = [
    "BACKENDS",
    "EncoderOptions",
    "FastChoice",
    "FastPolicy",
    "PathScore",
    "choose_encoder",
    "choose_fast",
    "cosine_scores",
    "load_encoder",
    "onnx_encoder",
]

_log = logging.getLogger(__name__)

#: what ``load_encoder(backend=...)`` accepts; ``fast`` is the default of index, bench and the retriever
BACKENDS = ("fast", "eager", "onnx-fp32", "onnx-int8")


@dataclass(frozen=True)
class FastPolicy:
    """When a fast path may replace fp32 eager: its cosine to eager on the calibration sample."""

    cosine_mean: float = 0.995
    cosine_min: float = 0.98
    order: tuple[str, ...] = ("onnx-int8", "onnx-fp32")  # fastest first


@dataclass(frozen=True)
class EncoderOptions:
    """How :func:`load_encoder` builds an encoder."""

    backend: str = "fast"
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    policy: FastPolicy = field(default_factory=FastPolicy)
    cache_root: Path | None = None  # None: the user cache (~/.cache/prime_retriever)
    max_length: int | None = None  # None: the model's own (sentence_bert_config.json; 256 for MiniLM)


@dataclass(frozen=True)
class PathScore:
    """A path's agreement with fp32 eager on the calibration sample."""

    backend: str
    cosine_mean: float
    cosine_min: float
    passed: bool


@dataclass
class FastChoice:
    """What ``fast`` chose, and why."""

    encoder: TextEncoder
    scores: list[PathScore]

    @property
    def backend(self) -> str:
        return str(getattr(self.encoder, "backend", "torch-fp32"))


def cosine_scores(reference: FloatMatrix, other: FloatMatrix) -> tuple[float, float]:
    """``(mean, min)`` over rows of the cosine between two ``(n, D)`` embedding matrices."""
    a = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    b = other / np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-12)
    cos = (a * b).sum(axis=1)  # (n,)
    return float(cos.mean()), float(cos.min())


def choose_encoder(reference: TextEncoder, candidates: Sequence[TextEncoder], texts: Sequence[str],
                   policy: FastPolicy) -> FastChoice:
    """The first of ``candidates`` whose embeddings of ``texts`` agree with ``reference``'s (see
    :class:`FastPolicy`), else ``reference``; with every candidate's scores."""
    want = reference.encode(list(texts), show_progress=False)  # (n, D)
    scores: list[PathScore] = []
    chosen: TextEncoder | None = None
    for cand in candidates:
        mean, worst = cosine_scores(want, cand.encode(list(texts), show_progress=False))
        ok = mean >= policy.cosine_mean and worst >= policy.cosine_min
        scores.append(PathScore(str(getattr(cand, "backend", cand.name)), mean, worst, ok))
        if ok and chosen is None:
            chosen = cand
    return FastChoice(chosen if chosen is not None else reference, scores)


def _sentence_format(model_dir: Path, max_length: int | None) -> EncoderFormat:
    """Pooling and token limit from a sentence-transformers folder (mean pooling, 256 if it says nothing)."""
    limit = max_length
    if limit is None:
        limit = 256
        cfg = model_dir / "sentence_bert_config.json"
        if cfg.is_file():
            try:
                limit = int(json.loads(cfg.read_text(encoding="utf-8"))["max_seq_length"])
            except (OSError, ValueError, KeyError, TypeError):
                limit = 256
    pooling = "mean"
    pool_cfg = model_dir / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        try:
            if json.loads(pool_cfg.read_text(encoding="utf-8")).get("pooling_mode_cls_token"):
                pooling = "cls"
        except (OSError, ValueError):
            pass
    return EncoderFormat(pooling="cls" if pooling == "cls" else "mean", max_length=limit)


def onnx_encoder(model_dir: Path | None, backend: str, options: EncoderOptions | None = None) -> OnnxTextEncoder:
    """The ``onnx-fp32`` or ``onnx-int8`` encoder of a sentence-transformers folder (exported on first use).

    Raises:
        EncoderError: an unknown backend, a folder without ``tokenizer.json`` or weights, or a failed export.
    """
    opts = options if options is not None else EncoderOptions()
    if backend not in ("onnx-fp32", "onnx-int8"):
        raise EncoderError(f"onnx_encoder: backend must be onnx-fp32 or onnx-int8, got {backend!r}")
    folder = (model_dir if model_dir is not None else default_encoder_path()).expanduser().resolve()
    if not (folder / "tokenizer.json").is_file():
        raise EncoderError(f"{folder} has no tokenizer.json: the ONNX path needs a fast tokenizer file")
    name = model_name_of(folder, str(folder))
    export = exported_encoder(folder, name, weights_fingerprint(folder), opts.cache_root)
    graph = export / ("model.int8.onnx" if backend == "onnx-int8" else "model.onnx")
    return OnnxTextEncoder(graph, folder / "tokenizer.json", EncoderIdentity(name, backend),
                           _sentence_format(folder, opts.max_length), opts.runtime)


def _scores_key(policy: FastPolicy) -> str:
    import onnxruntime

    texts = hashlib.sha256("\x00".join(CALIBRATION_TEXTS).encode()).hexdigest()[:8]
    # r2: int8 graphs run one text per forward (their scores changed with it)
    return f"r2-ort{onnxruntime.__version__}-vnni{cpu_has_vnni()}-texts{texts}-{policy}"


def choose_fast(model_dir: Path | None = None, options: EncoderOptions | None = None) -> FastChoice:
    """What ``fast`` picks for a sentence-transformers folder (default: the bundled MiniLM), with the scores."""
    opts = options if options is not None else EncoderOptions()
    folder = (model_dir if model_dir is not None else default_encoder_path()).expanduser().resolve()
    try:
        cands = [onnx_encoder(folder, b, opts) for b in opts.policy.order]
    except EncoderError as exc:  # no export possible here: the reference path, said once
        _log.warning("encoder fast: no ONNX path for %s (%s); using fp32 eager", folder, exc)
        return FastChoice(HFTextEncoder(folder, max_length=opts.max_length), [])
    record = cands[0].graph.parent / "calibration.json"
    key = _scores_key(opts.policy)
    try:
        known = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), list):
        scores = [PathScore(**s) for s in known[key]]
        by_backend = {c.backend: c for c in cands}
        for s in scores:
            if s.passed and s.backend in by_backend:
                return FastChoice(by_backend[s.backend], scores)
        if len(scores) == len(cands):
            return FastChoice(HFTextEncoder(folder, max_length=opts.max_length), scores)
    choice = choose_encoder(HFTextEncoder(folder, max_length=opts.max_length), cands, CALIBRATION_TEXTS,
                            opts.policy)
    known = known if isinstance(known, dict) else {}
    known[key] = [asdict(s) for s in choice.scores]
    try:
        write_bytes_atomic(record, json.dumps(known, indent=1).encode())
    except OSError as exc:  # a read-only cache: choose again next time
        _log.warning("encoder fast: cannot record the calibration in %s: %r", record, exc)
    for s in choice.scores:
        if not s.passed:
            _log.warning("encoder fast: %s not chosen: cosine to fp32 eager mean %.4f, worst %.4f "
                         "(needs %.3f, %.3f)", s.backend, s.cosine_mean, s.cosine_min,
                         opts.policy.cosine_mean, opts.policy.cosine_min)
    return choice


def load_encoder(spec: str | os.PathLike[str] | None = None, options: EncoderOptions | None = None) -> TextEncoder:
    """The encoder named by ``spec``, on the path ``options.backend`` says (default ``fast``).

    ``spec``: ``None`` (the bundled all-MiniLM-L6-v2), a backend name as a shorthand for the bundled
    model on it (``"fast"``, ``"eager"``, ``"onnx-fp32"``, ``"onnx-int8"``), a packaged model
    (``"bge-small-en-v1.5"``, ``"e5-small-v2"``: see :mod:`~prime_retriever.text.packaged_models`),
    or a sentence-transformers folder (a hub id only with ``eager``/``fast``, which then is eager).

    Raises:
        EncoderError: an unknown backend, missing model files, or a model that cannot be loaded.
    """
    opts = options if options is not None else EncoderOptions()
    ref = None if spec is None else str(spec)
    if ref in BACKENDS:
        opts = EncoderOptions(ref, opts.runtime, opts.policy, opts.cache_root, opts.max_length)
        ref = None
    if opts.backend not in BACKENDS:
        raise EncoderError(f"unknown encoder backend {opts.backend!r}; expected one of {BACKENDS}")
    if ref is not None and ref in PACKAGED_MODELS:
        return load_packaged_encoder(ref, opts.runtime)  # an int8 export already: no other path
    folder = None if ref is None else Path(ref).expanduser()
    if folder is not None and not folder.is_dir():
        if opts.backend in ("eager", "fast"):
            return HFTextEncoder(ref, max_length=opts.max_length)  # a hub id from the local cache, or an error
        raise EncoderError(f"encoder {ref!r}: the {opts.backend} path needs a local model folder")
    if opts.backend == "eager":
        return HFTextEncoder(folder, max_length=opts.max_length)
    if opts.backend == "fast":
        return choose_fast(folder, opts).encoder
    return onnx_encoder(folder, opts.backend, opts)
