"""Translation of ``qdrant_client.models.Filter`` objects into Qdrant Edge filters (:func:`to_edge_filter`).

The edge engine has its own filter classes; the library's callers (scope filters, framework
integrations) build qdrant-client ones, so :class:`~prime_retriever.stores.edge.EdgeStore` translates
the subset the engine runs and refuses the rest with a :class:`~prime_retriever.errors.StoreError`.
"""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe
from qdrant_client import models

from prime_retriever.errors import StoreError

__all__ = ["to_edge_filter"]


def _edge_match(match: Any, key: str) -> qe.MatchValue | qe.MatchAny | qe.MatchExcept:
    if isinstance(match, models.MatchValue):
        return qe.MatchValue(match.value)
    if isinstance(match, models.MatchAny):
        return qe.MatchAny(list(match.any))  # type: ignore[arg-type]
    if isinstance(match, models.MatchExcept):
        return qe.MatchExcept(list(match.except_))  # type: ignore[arg-type]
    raise StoreError(
        f"qdrant-edge: unsupported match {type(match).__name__} on field {key!r} "
        "(supported: MatchValue, MatchAny, MatchExcept)"
    )


def _edge_condition(cond: Any) -> qe.FieldCondition | qe.HasIdCondition | qe.Filter:
    if isinstance(cond, models.Filter):
        return to_edge_filter(cond)
    if isinstance(cond, models.HasIdCondition):
        return qe.HasIdCondition({str(i) for i in cond.has_id})
    if isinstance(cond, models.FieldCondition):
        other = [
            n
            for n in ("range", "geo_bounding_box", "geo_radius", "geo_polygon", "values_count", "is_empty")
            if getattr(cond, n, None) is not None
        ]
        if other or cond.match is None:
            raise StoreError(
                f"qdrant-edge: unsupported FieldCondition on {cond.key!r} (only match= is translated; "
                f"got {other or 'no match'})"
            )
        return qe.FieldCondition(key=cond.key, match=_edge_match(cond.match, cond.key))
    raise StoreError(
        f"qdrant-edge: unsupported filter condition {type(cond).__name__} "
        "(supported: FieldCondition(match=MatchValue|MatchAny|MatchExcept), HasIdCondition, nested Filter)"
    )


def _conditions(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, list | tuple) else [value]


def to_edge_filter(flt: models.Filter) -> qe.Filter:
    """Translate a ``qdrant_client.models.Filter`` into a ``qdrant_edge.Filter``.

    Supported: ``must`` / ``should`` / ``must_not`` lists (arbitrarily nested) of
    ``FieldCondition(key, match=MatchValue | MatchAny | MatchExcept)``, ``HasIdCondition`` and
    ``Filter``. Anything else (ranges, geo, ``min_should``, text match, ...) raises
    :class:`StoreError`.
    """
    if not isinstance(flt, models.Filter):
        raise StoreError(f"qdrant-edge: filter must be a qdrant_client.models.Filter, got {type(flt)}")
    if flt.min_should is not None:
        raise StoreError("qdrant-edge: Filter.min_should is not supported by the edge filter translation")
    parts: dict[str, list[Any] | None] = {}
    for clause in ("must", "should", "must_not"):
        conds = _conditions(getattr(flt, clause))
        parts[clause] = None if conds is None else [_edge_condition(c) for c in conds]
    return qe.Filter(must=parts["must"], should=parts["should"], must_not=parts["must_not"])
