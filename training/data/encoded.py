"""Encode a dataset once, then address vectors by row.

:class:`EncodedCorpus` encodes every corpus document (``Document.encoding_text``) in one
``encode`` call; :class:`EncodedExamples` encodes every unique context turn and query text of a
list of examples in one call and maps each example to row indices:
``(context rows, query row, positive rows, negative rows)`` — text rows into
``EncodedExamples.vectors``, document rows into the corpus' ``vectors``. Any object with
``encode(texts, batch_size=...) -> (n, D) float32`` plus ``dim`` and ``name`` works (the
:class:`TextEncoderLike` protocol; ``prime_retriever.text.encoders.HFTextEncoder`` / ``CachedEncoder``
satisfy it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data.collate import CollatedBatch, collate
from training.data.examples import Example


class TextEncoderLike(Protocol):
    """The part of ``prime_retriever.text.encoders.TextEncoder`` this module needs."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int = ...) -> npt.NDArray[np.float32]: ...


def _encode(encoder: TextEncoderLike, texts: Sequence[str], batch_size: int) -> npt.NDArray[np.float32]:
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    vecs = np.asarray(encoder.encode(texts, batch_size=batch_size), dtype=np.float32)
    if vecs.shape != (len(texts), encoder.dim):
        raise DataError(f"encoder {encoder.name!r} returned shape {vecs.shape}, expected {(len(texts), encoder.dim)}")
    return vecs


class EncodedCorpus:
    """Corpus vectors: ``ids[row]`` is the document of ``vectors[row]``, ``row_of[id]`` the inverse."""

    def __init__(self, corpus: Mapping[str, Document], encoder: TextEncoderLike, *, batch_size: int = 64) -> None:
        self.ids: list[str] = list(corpus)
        self.row_of: dict[str, int] = {doc_id: i for i, doc_id in enumerate(self.ids)}
        self.encoder_name: str = encoder.name
        self.vectors: npt.NDArray[np.float32] = _encode(
            encoder, [corpus[i].encoding_text for i in self.ids], batch_size)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[str]) -> tuple[int, ...]:
        """Rows of ``ids``; :class:`DataError` names any id not in the corpus."""
        missing = [i for i in ids if i not in self.row_of]
        if missing:
            raise DataError(f"document ids not in the encoded corpus: {missing[:5]}")
        return tuple(self.row_of[i] for i in ids)


@dataclass(frozen=True)
class ExampleRows:
    """Row indices of one example: text rows for context and query, corpus rows for documents."""

    context: tuple[int, ...]
    query: int
    positives: tuple[int, ...]
    negatives: tuple[int, ...]
    excluded: tuple[int, ...]


class EncodedExamples:
    """Every unique context-turn / query text encoded once; ``rows[i]`` indexes example ``i``."""

    def __init__(self, examples: Sequence[Example], encoder: TextEncoderLike, corpus: EncodedCorpus,
                 *, batch_size: int = 64) -> None:
        self.examples: list[Example] = list(examples)
        self.corpus = corpus
        self.encoder_name: str = encoder.name
        text_row: dict[str, int] = {}
        for ex in self.examples:
            for t in ex.turns:
                text_row.setdefault(t, len(text_row))
        self.texts: list[str] = list(text_row)
        self.vectors: npt.NDArray[np.float32] = _encode(encoder, self.texts, batch_size)
        self.rows: list[ExampleRows] = [
            ExampleRows(context=tuple(text_row[t] for t in ex.context), query=text_row[ex.query],
                        positives=corpus.rows(ex.positive_ids), negatives=corpus.rows(ex.negative_ids),
                        excluded=corpus.rows(ex.exclude_ids))
            for ex in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: Sequence[int], *, max_context_length: int | None = None,
              positive: int = 0) -> CollatedBatch:
        """Collate examples ``indices``; the target is each example's ``positive``-th positive (modulo their count)."""
        rows = [self.rows[i] for i in indices]
        return collate([self.vectors[list(r.context)] for r in rows], [self.vectors[r.query] for r in rows],
                       [self.corpus.vectors[r.positives[positive % len(r.positives)]] for r in rows],
                       max_context_length=max_context_length)
