"""A search or prepare as the batch pipeline sees it, and the checks that make one (before any I/O).

:class:`RequestValidator` turns the caller's arguments into a :class:`Request` or raises
:class:`~prime_retriever.errors.PredictorError`; :class:`Outcome` is what the batch produced for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from prime_retriever.errors import PredictorError
from prime_retriever.retrieval.results import HitSource
from prime_retriever.stores.base import MAX_K, ScoredDoc, is_valid_k

__all__ = ["ContextInput", "FloatArray", "Outcome", "QueryInput", "Request", "RequestValidator", "unit_rows"]

FloatArray = npt.NDArray[np.float32]
#: A conversation: one text, a list of texts (oldest first), or embeddings N × D (or one D vector).
ContextInput = str | Sequence[str] | npt.NDArray[Any] | Sequence[npt.NDArray[Any]]
#: The query: a text or an embedding (D,).
QueryInput = str | npt.NDArray[Any]


@dataclass
class Request:
    """One validated search, prepare or predict (a search's vector without its search), as queued in the
    micro-batcher."""

    kind: Literal["search", "prepare", "predict"]
    context_texts: list[str] | None  # N texts (already truncated)
    context_vecs: FloatArray | None  # N × D (already truncated)
    query_text: str | None
    query_vec: FloatArray | None  # (D,)
    k: int
    filter: Any
    exclude_ids: tuple[str, ...]
    session_id: str | None


@dataclass
class Outcome:
    """What the batch produced for one request."""

    docs: list[ScoredDoc]  # best first, as fetched: at least the request's k where the store holds them
    source: HitSource
    confidence: float
    vector: FloatArray = field(repr=False)  # (O,) the vector that was compared/searched


def unit_rows(arr: npt.NDArray[Any], dim: int, what: str) -> FloatArray:
    """``arr`` (... × ``dim``) as float32 unit rows, or a :class:`PredictorError`: the one check of input vectors.

    The store and the predictor work in cosine space. The norm is taken in float64 after scaling by
    the largest value, so a finite row of any scale (1e-30 or 3e38 per value) gives the unit vector's
    direction instead of overflowing or underflowing float32. Complex (its imaginary part would be
    dropped), bool, str and object dtypes are refused, as are NaN, Inf and all-zero rows.
    """
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise PredictorError(f"{what} must have a real numeric dtype (float or int); got dtype {dtype}")
    wide = np.asarray(arr, dtype=np.float64)
    if wide.ndim == 0 or wide.shape[-1:] != (dim,):
        raise PredictorError(f"{what} must have last dimension {dim}; got shape {wide.shape}")
    if not np.isfinite(wide).all():
        raise PredictorError(f"{what} contains NaN or Inf (or values beyond float64)")
    rows = wide.reshape(-1, dim)  # R × D
    if rows.shape[0] == 0:
        raise PredictorError(f"{what} holds no embedding (shape {wide.shape})")
    peak = np.abs(rows).max(axis=1, keepdims=True)  # R × 1: scale first, the squares of 1e200 overflow float64
    if (peak == 0).any():
        raise PredictorError(f"{what} contains an all-zero embedding")
    scaled = rows / peak
    unit = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
    out: FloatArray = unit.reshape(wide.shape).astype(np.float32)
    return out


class RequestValidator:
    """Validates requests for an encoder of dimension ``dim`` and a predictor that sees ``keep_turns`` turns."""

    def __init__(self, dim: int, keep_turns: int) -> None:
        self.dim = dim
        self.keep_turns = keep_turns

    def _check_vectors(self, arr: npt.NDArray[Any], what: str) -> FloatArray:
        return unit_rows(arr, self.dim, what)

    @staticmethod
    def _check_text(text: str, what: str) -> str:
        """``text``, refused unless it is valid Unicode (a lone surrogate cannot be encoded as UTF-8 or tokenised)."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PredictorError(
                f"{what} is not valid Unicode: {exc.reason} at position {exc.start} ({text[exc.start:exc.end]!r})"
            ) from None
        return text

    def _context(self, context: ContextInput) -> tuple[list[str] | None, FloatArray | None]:
        """Validate a context; keep its most recent turns (``max_context_length`` less any link candidates)."""
        keep = self.keep_turns
        if isinstance(context, str):
            context = [context]
        if isinstance(context, np.ndarray):
            arr = context[None, :] if context.ndim == 1 else context
            if arr.ndim != 2:
                raise PredictorError(f"context embeddings must have shape (N, {self.dim}); got {context.shape}")
            if arr.shape[0] == 0:
                raise PredictorError("empty context: expected at least one turn")
            return None, self._check_vectors(arr[-keep:], "context")  # N × D
        if not isinstance(context, Sequence):
            raise PredictorError(f"context must be a str, a list of str, or an array; got {type(context).__name__}")
        items = list(context)
        if not items:
            raise PredictorError("empty context: expected at least one turn")
        if all(isinstance(t, str) for t in items):
            texts = [self._check_text(str(t), f"context turn {i}") for i, t in enumerate(items)]
            empty = [i for i, t in enumerate(texts) if not t.strip()]
            if empty:
                raise PredictorError(f"empty context turn(s) at position(s) {empty}")
            return texts[-keep:], None
        if all(isinstance(t, np.ndarray) for t in items):
            rows = [self._check_vectors(np.asarray(t).reshape(-1), f"context turn {i}")
                    for i, t in enumerate(items[-keep:])]
            if any(r.shape != (self.dim,) for r in rows):
                raise PredictorError(f"every context embedding must have shape ({self.dim},)")
            return None, np.stack(rows)
        raise PredictorError("context turns must be all texts or all embeddings")

    def _query(self, query: QueryInput) -> tuple[str | None, FloatArray | None]:
        if isinstance(query, str):
            if not query.strip():
                raise PredictorError("empty query")
            return self._check_text(query, "query"), None
        if isinstance(query, np.ndarray):
            q = query.reshape(-1) if query.ndim == 2 and query.shape[0] == 1 else query
            if q.ndim != 1:
                raise PredictorError(f"query embedding must have shape ({self.dim},); got {query.shape}")
            return None, self._check_vectors(q, "query")
        raise PredictorError(f"query must be a str or an array; got {type(query).__name__}")

    def request(
        self, kind: Literal["search", "prepare", "predict"], context: ContextInput, query: QueryInput | None, k: int,
        flt: Any, exclude_ids: Iterable[str], session_id: str | None,
    ) -> Request:
        if not is_valid_k(k):
            raise PredictorError(f"k must be an integer in [1, {MAX_K}]; got {k!r}")
        if kind != "prepare" and query is None:
            raise PredictorError("query is required (got None); to predict from the context alone, use prepare()")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise PredictorError(f"session_id must be a non-empty str or None; got {session_id!r}")
        if flt is not None and not isinstance(flt, models.Filter):
            raise PredictorError(f"filter must be a qdrant_client.models.Filter or None; got {type(flt).__name__}")
        if isinstance(exclude_ids, str | bytes) or not isinstance(exclude_ids, Iterable):
            raise PredictorError(
                f"exclude_ids must be an iterable of str doc ids (not one str); got {type(exclude_ids).__name__}"
            )
        excluded = tuple(exclude_ids)  # once: an iterator must not be used up by the check below
        if not all(isinstance(x, str) for x in excluded):
            raise PredictorError("exclude_ids must be an iterable of str doc ids")
        ctx_texts, ctx_vecs = self._context(context)
        if query is None:  # PREPARE: the last turn stands in for the query
            q_text = ctx_texts[-1] if ctx_texts is not None else None
            q_vec = ctx_vecs[-1] if ctx_vecs is not None else None
        else:
            q_text, q_vec = self._query(query)
        return Request(kind, ctx_texts, ctx_vecs, q_text, q_vec, int(k), flt, excluded, session_id)
