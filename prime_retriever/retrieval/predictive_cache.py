"""The PREPARE-state predictive cache.

While the orchestrator is in its PREPARE state (the user is still typing, a tool is still
running, ...), :meth:`PredictiveRetriever.prepare` predicts the ideal context's embedding from the
conversation so far, runs the search, and stores the pair ``(predicted vector, hits)`` here under
the session id. When the real query arrives, :meth:`PredictiveRetriever.search` computes its
real prediction; if it is close enough to the prepared one (cosine >= ``threshold``) the prepared
hits are served and the store is not touched.

The cache is bounded by size (least-recently-used entries are evicted) and by age (entries older
than ``ttl_s`` are never served and are purged on access). Memory therefore stays bounded however
many sessions come and go. The clock is injectable so tests can expire entries without sleeping.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from prime_retriever.stores.base import ScoredDoc

__all__ = ["CacheStats", "PredictiveCache", "PreparedEntry", "filter_key"]

FloatVector = npt.NDArray[np.float32]


def filter_key(flt: Any) -> str | None:
    """A stable string identity of a search filter (``None`` for no filter).

    Pydantic models (``qdrant_client.models.Filter``) are dumped to JSON; anything else uses
    ``repr``. Two searches may share cached hits only if their filter keys are equal.
    """
    if flt is None:
        return None
    dump = getattr(flt, "model_dump", None)
    if callable(dump):
        return json.dumps(dump(mode="json", exclude_none=True), sort_keys=True)
    return repr(flt)


@dataclass(frozen=True)
class PreparedEntry:
    """What PREPARE left for one session."""

    vector: FloatVector  # (O,) unit-norm predicted embedding
    hits: tuple[ScoredDoc, ...]  # best first, at most `k`
    k: int  # the k the prepared search asked for
    filter_key: str | None
    exclude_ids: frozenset[str]
    created_at: float  # clock() at insertion


@dataclass
class CacheStats:
    """Counters of the cache lookups made by searches that named a session."""

    hits: int = 0
    misses: int = 0
    expired: int = 0
    evicted: int = 0
    hit_latency_total_s: float = 0.0
    hit_latency_count: int = 0
    miss_latency_total_s: float = 0.0
    miss_latency_count: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """hits / lookups (0 before the first lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def mean_hit_latency_s(self) -> float | None:
        """Mean end-to-end latency of searches served from the cache (None if none measured)."""
        return self.hit_latency_total_s / self.hit_latency_count if self.hit_latency_count else None

    @property
    def mean_miss_latency_s(self) -> float | None:
        """Mean end-to-end latency of session searches that missed the cache."""
        return self.miss_latency_total_s / self.miss_latency_count if self.miss_latency_count else None

    @property
    def latency_saved_s(self) -> float:
        """Estimated total latency saved: (mean miss latency - mean hit latency) × hits.

        Without a measured hit latency the estimate is mean miss latency × hits.
        """
        miss = self.mean_miss_latency_s
        if miss is None or self.hits == 0:
            return 0.0
        hit = self.mean_hit_latency_s or 0.0
        return max(miss - hit, 0.0) * self.hits

    def as_dict(self) -> dict[str, float | int | None]:
        """The counters and derived figures, for logs and benchmarks."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "expired": self.expired,
            "evicted": self.evicted,
            "mean_hit_latency_s": self.mean_hit_latency_s,
            "mean_miss_latency_s": self.mean_miss_latency_s,
            "latency_saved_s": self.latency_saved_s,
        }


class PredictiveCache:
    """Session id -> :class:`PreparedEntry`, bounded by ``max_size`` (LRU) and ``ttl_s``.

    Args:
        max_size: most entries kept; inserting beyond it evicts the least recently used.
        ttl_s: entries older than this are never served (``None``: no age limit).
        threshold: the least cosine between the prepared and the real prediction for a hit.
        clock: a monotonic clock in seconds (injectable for tests).

    Not thread-safe: use it from the event loop's thread only (the retriever does).
    """

    def __init__(
        self,
        max_size: int = 1024,
        ttl_s: float | None = 300.0,
        threshold: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive or None, got {ttl_s}")
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a cosine in [-1, 1], got {threshold}")
        self.max_size = max_size
        self.ttl_s = ttl_s
        self.threshold = threshold
        self.clock = clock
        self.stats = CacheStats()
        self._entries: OrderedDict[str, PreparedEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def _expired(self, entry: PreparedEntry, now: float) -> bool:
        return self.ttl_s is not None and now - entry.created_at > self.ttl_s

    def put(
        self,
        session_id: str,
        vector: npt.ArrayLike,
        hits: Sequence[ScoredDoc],
        k: int,
        filter: Any = None,
        exclude_ids: Sequence[str] = (),
    ) -> PreparedEntry:
        """Store (or replace) the prepared prediction of ``session_id``; evict LRU entries beyond ``max_size``."""
        vec = np.asarray(vector, dtype=np.float32).reshape(-1).copy()  # (O,)
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(vec).all() or norm == 0.0:
            raise ValueError("prepared vector must be finite and non-zero")
        entry = PreparedEntry(
            vector=vec / norm,
            hits=tuple(hits),
            k=k,
            filter_key=filter_key(filter),
            exclude_ids=frozenset(exclude_ids),
            created_at=self.clock(),
        )
        self._entries[session_id] = entry
        self._entries.move_to_end(session_id)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            self.stats.evicted += 1
        return entry

    def get(self, session_id: str) -> PreparedEntry | None:
        """The live entry of ``session_id`` (marked recently used), or ``None``; expired entries are dropped."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if self._expired(entry, self.clock()):
            del self._entries[session_id]
            self.stats.expired += 1
            return None
        self._entries.move_to_end(session_id)
        return entry

    def lookup(
        self,
        session_id: str,
        vector: npt.ArrayLike,
        k: int,
        filter: Any = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[ScoredDoc] | None:
        """The ``k`` prepared hits if they answer this search, else ``None``; counts a hit or a miss.

        A hit needs a live entry, cosine(prepared, ``vector``) >= ``threshold``, the same filter,
        prepared exclusions that are a subset of this search's (then this search's extra
        exclusions are dropped from the prepared list, which stays a correct ranking), and at
        least ``k`` hits left, or all of them if the prepared search exhausted the collection.
        """
        entry = self.get(session_id)
        hits = None if entry is None else self._answer(entry, vector, k, filter, exclude_ids)
        if hits is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return hits

    def _answer(
        self, entry: PreparedEntry, vector: npt.ArrayLike, k: int, flt: Any, exclude_ids: Sequence[str]
    ) -> list[ScoredDoc] | None:
        if entry.filter_key != filter_key(flt):
            return None
        excluded = frozenset(exclude_ids)
        if not entry.exclude_ids <= excluded:
            return None
        v = np.asarray(vector, dtype=np.float32).reshape(-1)  # (O,)
        if v.shape != entry.vector.shape:
            return None
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            return None
        if float(entry.vector @ v) / norm < self.threshold:
            return None
        kept = [h for h in entry.hits if h.doc_id not in excluded]
        exhausted = len(entry.hits) < entry.k  # the prepared search returned everything that matched
        if len(kept) < k and not exhausted:
            return None
        return kept[:k]

    def record_latency(self, from_cache: bool, seconds: float) -> None:
        """Record the end-to-end latency of a session search (feeds :attr:`CacheStats.latency_saved_s`)."""
        if from_cache:
            self.stats.hit_latency_total_s += seconds
            self.stats.hit_latency_count += 1
        else:
            self.stats.miss_latency_total_s += seconds
            self.stats.miss_latency_count += 1

    def discard(self, session_id: str) -> bool:
        """Forget one session (e.g. when it ends); True if it was cached."""
        return self._entries.pop(session_id, None) is not None

    def purge_expired(self) -> int:
        """Drop every expired entry now; return how many were dropped."""
        now = self.clock()
        dead = [sid for sid, e in self._entries.items() if self._expired(e, now)]
        for sid in dead:
            del self._entries[sid]
        self.stats.expired += len(dead)
        return len(dead)

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        self._entries.clear()
