"""A :class:`~prime_retriever.text.encoders.TextEncoder` run by onnxruntime: a BERT-style graph and its
``tokenizer.json`` (the Rust ``tokenizers`` library), pooled and L2-normalised in numpy.

The graph takes ``input_ids`` (and ``attention_mask`` and ``token_type_ids`` when it has those inputs),
each B × T int64, and outputs ``last_hidden_state`` (B × T × D). A graph without ``attention_mask`` is
fed one unpadded text per forward. The same class runs the graphs this project
exports from a sentence-transformers folder (:mod:`~prime_retriever.text.onnx_export`) and third-party
exports such as the int8 bge/e5 graphs of :mod:`~prime_retriever.text.packaged_models`.

Texts are tokenised once per call, sorted by token length and packed into batches by a token budget
(:func:`~prime_retriever.text.length_batching.token_batches`), so padding costs almost nothing. The
session is built once with every core as intra-op threads; the tokenizer is built once. When a call
runs one text per forward (int8 graphs), its texts go to one worker thread per core instead
(:class:`~prime_retriever.text.worker_sessions.WorkerSessions`); the vectors are the same either way.
"""

from __future__ import annotations

import os
import platform
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from prime_retriever.errors import EncoderError
from prime_retriever.text.encoders import DEFAULT_PROGRESS_THRESHOLD, FloatMatrix, check_texts
from prime_retriever.text.length_batching import token_batches
from prime_retriever.text.worker_sessions import WorkerSessions, cpu_session

__all__ = ["EAGER_BACKEND", "EncoderFormat", "EncoderIdentity", "OnnxTextEncoder", "RuntimeOptions", "cpu_has_vnni",
           "model_of"]

#: The backend name of :class:`~prime_retriever.text.encoders.HFTextEncoder` (transformers, fp32, eager):
#: its encoder name carries no backend suffix, so the embeddings it cached before backends existed stay valid.
EAGER_BACKEND = "torch-fp32"
#: onnx metadata key this project stamps on the int8 encoder graphs it writes (their weights cannot
#: saturate on CPUs without VNNI; see :func:`~prime_retriever.text.onnx_export.quantize_encoder_int8`)
INT8_FORMAT_KEY = "prime_retriever.int8_weights"


@dataclass(frozen=True)
class EncoderFormat:
    """How texts go in and embeddings come out, beyond the graph itself.

    ``query_prefix`` is put before query texts (:meth:`OnnxTextEncoder.encode_queries`) and
    ``passage_prefix`` before everything else (:meth:`OnnxTextEncoder.encode`): e5's ``"query: "`` and
    ``"passage: "``, or bge's retrieval instruction for queries alone.
    """

    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    max_length: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""


@dataclass(frozen=True)
class EncoderIdentity:
    """The model and the path that computes its embeddings: together they name the vectors."""

    model_name: str  # e.g. "sentence-transformers/all-MiniLM-L6-v2"
    backend: str  # e.g. "onnx-int8"

    @property
    def name(self) -> str:
        """The encoder name: cache keys and collections tell apart the vectors of different backends."""
        return self.model_name if self.backend == EAGER_BACKEND else f"{self.model_name}+{self.backend}"


def model_of(encoder_name: str) -> str:
    """The model an encoder name names, whatever path computes it: ``"m+onnx-int8"`` → ``"m"``.

    Vectors of one model on two paths agree to the cosine the fast path was chosen by, so a checkpoint
    or an adapter trained on one serves on the other; a cache or a collection still tells them apart.
    """
    head, sep, backend = encoder_name.rpartition("+")
    return head if sep and backend.startswith("onnx-") else encoder_name


@dataclass(frozen=True)
class RuntimeOptions:
    """onnxruntime session and batching settings."""

    intra_op_threads: int | None = None  # None: every core
    text_workers: int | None = None  # threads for the one-text forwards of a multi-text call; None: as intra-op
    max_batch_tokens: int = 1024  # padded tokens per forward (rows × longest row): small batches stay in cache
    optimize: bool = True  # ORT_ENABLE_ALL (fuses GELU, LayerNorm on load)

    def threads(self) -> int:
        """The session's intra-op threads: ``intra_op_threads``, else one per core."""
        return max(1, self.intra_op_threads or os.cpu_count() or 1)

    def workers(self) -> int:
        """How many one-text forwards run at once: ``text_workers``, else as many as intra-op threads."""
        return max(1, self.text_workers or self.threads())


def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has VNNI (int8 dot products accumulated in int32); ``None`` if unknown or not x86."""
    if platform.machine().lower() not in {"x86_64", "amd64", "i686", "x86"}:
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        return None
    return None


class OnnxTextEncoder:
    """A BERT-style ONNX graph behind the :class:`~prime_retriever.text.encoders.TextEncoder` protocol.

    Args:
        graph: the ``.onnx`` file.
        tokenizer: its ``tokenizer.json``.
        identity: the model name and backend (see :attr:`name`).
        fmt: pooling, normalisation, token limit, prefixes.
        runtime: threads and the batch token budget.

    Raises:
        EncoderError: a file is missing, or the graph or the tokenizer cannot be loaded or lack the
            inputs/outputs described above.
    """

    def __init__(
        self, graph: str | os.PathLike[str], tokenizer: str | os.PathLike[str], identity: EncoderIdentity,
        fmt: EncoderFormat | None = None, runtime: RuntimeOptions | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        self.graph = Path(graph)
        self.identity = identity
        self.fmt = fmt if fmt is not None else EncoderFormat()
        self.runtime = runtime if runtime is not None else RuntimeOptions()
        if self.fmt.max_length < 2:
            raise EncoderError(f"max_length must be >= 2, got {self.fmt.max_length}")
        for f in (self.graph, Path(tokenizer)):
            if not f.is_file():
                raise EncoderError(f"encoder file not found: {f}")
        try:
            self._tokenizer: Any = Tokenizer.from_file(str(tokenizer))
        except Exception as exc:
            raise EncoderError(f"cannot load the tokenizer {tokenizer}: {exc}") from exc
        self._tokenizer.no_padding()  # padding is ours, per length-sorted batch
        self._tokenizer.enable_truncation(self.fmt.max_length)
        try:
            self.session: Any = cpu_session(self.graph, self.runtime.threads(), self.runtime.optimize)
        except Exception as exc:
            raise EncoderError(f"cannot load the encoder graph {self.graph}: {exc}") from exc
        inputs = {i.name for i in self.session.get_inputs()}
        if "input_ids" not in inputs or not inputs <= {"input_ids", "attention_mask", "token_type_ids"}:
            raise EncoderError(f"encoder graph {self.graph} has inputs {sorted(inputs)}, expected input_ids "
                               "(and attention_mask, token_type_ids)")
        self._token_types = "token_type_ids" in inputs
        self._masked = "attention_mask" in inputs
        self._rows = WorkerSessions(self.graph, self.runtime.workers(), self.runtime.optimize)
        outputs = {o.name: o for o in self.session.get_outputs()}
        out = outputs.get("last_hidden_state")
        if out is None or not isinstance(out.shape[-1], int):
            raise EncoderError(f"encoder graph {self.graph} has no last_hidden_state output of a fixed width")
        self._dim = int(out.shape[-1])
        self._warn_if_saturating()

    def _warn_if_saturating(self) -> None:
        """A foreign int8 graph with 8-bit weights can saturate on x86 CPUs without VNNI: say so."""
        meta = self.session.get_modelmeta().custom_metadata_map
        if INT8_FORMAT_KEY in meta or "int8" not in self.identity.backend or cpu_has_vnni() is not False:
            return
        warnings.warn(
            f"encoder {self.name!r}: an int8 graph with 8-bit weights on a CPU without VNNI, where u8 x s8 "
            "pair sums can saturate; check its embeddings (prime-retriever bench-encoder)", stacklevel=3)

    @property
    def name(self) -> str:
        """``model_name+backend`` (e.g. ``sentence-transformers/all-MiniLM-L6-v2+onnx-int8``)."""
        return self.identity.name

    @property
    def model_name(self) -> str:
        """The model alone, whatever runs it (what checkpoints record)."""
        return self.identity.model_name

    @property
    def backend(self) -> str:
        """What computes the embeddings (``onnx-fp32``, ``onnx-int8``, ...)."""
        return self.identity.backend

    @property
    def dim(self) -> int:
        """Embedding dimension (the graph's hidden size)."""
        return self._dim

    @property
    def max_length(self) -> int:
        """Texts are truncated to this many tokens (special tokens included)."""
        return self.fmt.max_length

    def __repr__(self) -> str:
        return f"OnnxTextEncoder(name={self.name!r}, dim={self._dim}, graph={str(self.graph)!r})"

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> FloatMatrix:
        """Encode documents/turns (with ``passage_prefix``) into unit float32 rows, shape ``(len(texts), dim)``.

        ``batch_size`` caps the texts of one forward (int8 graphs: one, see below); the token budget
        packs the batches.

        Raises:
            EncoderError: bad input or a failure inside onnxruntime.
        """
        return self._encode(texts, self.fmt.passage_prefix, batch_size, show_progress)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64,
                       show_progress: bool | None = None) -> FloatMatrix:
        """Like :meth:`encode`, for search queries (with ``query_prefix``)."""
        return self._encode(texts, self.fmt.query_prefix, batch_size, show_progress)

    def _encode(self, texts: Sequence[str], prefix: str, batch_size: int, show_progress: bool | None) -> FloatMatrix:
        from tqdm.auto import tqdm

        items = check_texts(texts, batch_size)
        out = np.empty((len(items), self._dim), dtype=np.float32)  # (n, D)
        if not items:
            return out
        if show_progress is None:
            show_progress = len(items) > DEFAULT_PROGRESS_THRESHOLD
        try:
            encodings = self._tokenizer.encode_batch([prefix + t for t in items] if prefix else items)
            ids = [e.ids for e in encodings]
            # int8 graphs quantise activations per tensor, with a scale from the whole batch (padding
            # included): a text's embedding would depend on its batch-mates. One text per forward keeps it a
            # function of the text alone (a PREPAREd turn embeds as it would in the search), at little cost.
            # A graph without a mask cannot be padded at all.
            per_text = 1 if "int8" in self.identity.backend or not self._masked else batch_size
            batches = token_batches([len(x) for x in ids], self.runtime.max_batch_tokens, per_text)
            rows = [[ids[i] for i in idx] for idx in batches]
            pooled: Iterable[FloatMatrix]
            if per_text == 1 and len(rows) > 1 and self._rows.workers > 1:
                pooled = self._rows.map(self._forward, rows)
            else:
                pooled = (self._forward(self.session, r) for r in rows)
            for idx, vecs in tqdm(zip(batches, pooled, strict=True), total=len(batches),
                                  desc=f"encoding ({self.name})", disable=not show_progress):
                out[idx] = vecs
        except EncoderError:
            raise
        except Exception as exc:
            raise EncoderError(f"encoder {self.name!r} failed: {exc}") from exc
        return out

    def _forward(self, session: Any, rows: list[list[int]]) -> FloatMatrix:
        """One forward of token-id rows, padded to the longest: ``(len(rows), D)`` pooled, normalised."""
        width = max(len(r) for r in rows)
        input_ids = np.zeros((len(rows), width), np.int64)  # B × T
        mask = np.zeros((len(rows), width), np.int64)  # B × T, 1 = real token
        for j, r in enumerate(rows):
            input_ids[j, : len(r)] = r
            mask[j, : len(r)] = 1
        feeds: dict[str, npt.NDArray[np.int64]] = {"input_ids": input_ids}
        if self._masked:
            feeds["attention_mask"] = mask
        elif any(len(r) != width for r in rows):  # an unmasked graph would attend to the padding
            raise EncoderError(f"encoder graph {self.graph} has no attention_mask: one text per forward")
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = np.asarray(session.run(["last_hidden_state"], feeds)[0], np.float32)  # B × T × D
        if self.fmt.pooling == "cls":
            pooled = hidden[:, 0]  # B × D
        else:
            m = mask[..., None].astype(np.float32)  # B × T × 1
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)  # B × D
        if self.fmt.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled, dtype=np.float32)
