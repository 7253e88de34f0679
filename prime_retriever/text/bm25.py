"""BM25 sparse vectors, the sparse half of hybrid search, made by Qdrant's own BM25 model.

A document becomes term-frequency weights (k1 = 1.2, b = 0.75, Qdrant's defaults) over hashed token
ids; a query becomes weight 1.0 per distinct token. The inverse document frequency is not in the
vectors: the store applies it (a sparse vector with Qdrant's IDF modifier), so it always reflects the
collection as it is now. The tokenizer (English Snowball stemmer and stop words, lower-cased) is the
one Qdrant Edge ships in ``qdrant_edge.Bm25``; the vectors it makes are plain (index, value) pairs, so
the same ones go into Qdrant local mode, a server and Edge alike, and the three rank alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prime_retriever.errors import EncoderError
from prime_retriever.text.encoders import check_texts

__all__ = ["BM25_AVG_LEN", "Bm25Encoder", "SparseVector"]

#: The average document length (tokens) the term weights are normalised by: Qdrant's default. A
#: constant rather than the corpus's mean so that a document's vector never changes when others are added.
BM25_AVG_LEN = 256.0


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector: distinct non-negative ``indices`` and their finite ``values``, of equal length."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError(f"sparse vector: {len(self.indices)} indices but {len(self.values)} values")
        if len(set(self.indices)) != len(self.indices):
            raise ValueError("sparse vector: repeated indices")
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < 2**32 for i in self.indices):
            raise ValueError("sparse vector: indices must be integers in [0, 2**32)")
        if not all(isinstance(v, float | int) and math.isfinite(v) for v in self.values):
            raise ValueError("sparse vector: values must be finite numbers")


class Bm25Encoder:
    """Texts to BM25 :class:`SparseVector` s (needs ``qdrant-edge-py``: ``pip install prime-retriever[edge]``).

    Args:
        language: the stemmer and stop-word language (Qdrant's names, e.g. ``"english"``).
    """

    name = "qdrant-bm25"

    def __init__(self, language: str = "english") -> None:
        try:
            import qdrant_edge as qe
        except ImportError as exc:
            raise EncoderError(
                "hybrid search needs Qdrant's BM25 tokenizer from qdrant-edge-py: pip install 'prime-retriever[edge]'"
            ) from exc
        try:
            self._model: Any = qe.Bm25(qe.Bm25Config(k=1.2, b=0.75, avg_len=BM25_AVG_LEN, language=language))
        except ValueError as exc:
            raise EncoderError(f"BM25: {exc}") from exc
        self.language = language

    @staticmethod
    def _sparse(vec: Any) -> SparseVector:
        return SparseVector(tuple(int(i) for i in vec.indices), tuple(float(v) for v in vec.values))

    def _embed(self, text: str, as_query: bool) -> SparseVector:
        try:
            vec = self._model.embed_query(text) if as_query else self._model.embed_document(text)
        except (ValueError, TypeError, UnicodeError) as exc:  # e.g. a lone surrogate the engine cannot take
            raise EncoderError(f"BM25 cannot tokenize {text[:40]!r}: {exc}") from exc
        return self._sparse(vec)

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """One term-frequency vector per text (a text with no indexable token gives an empty vector)."""
        return [self._embed(t, False) for t in check_texts(texts)]

    def embed_query(self, text: str) -> SparseVector:
        """Weight 1.0 per distinct token of ``text``."""
        return self._embed(check_texts([text])[0], True)
