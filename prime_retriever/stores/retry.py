"""Bounded retries of store calls: a dead or hanging store fails in bounded time with a typed error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prime_retriever.errors import PrimeError, RetrieverError, StoreError
from prime_retriever.stores.base import StoreUnavailableError

__all__ = ["RetryPolicy", "call_store"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of store calls.

    ``attempts`` tries in all; before try ``i + 1`` wait ``min(base_delay_s * 2**i, max_delay_s)``;
    each try is bounded by ``timeout_s`` (``asyncio.wait_for``), so a hanging store fails too.
    Retried: :class:`StoreUnavailableError`, timeouts and any non-prime exception. Not retried: a
    plain :class:`StoreError` (a permanent refusal, e.g. an encoder mismatch), raised unchanged.
    """

    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    timeout_s: float | None = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must be >= 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive or None, got {self.timeout_s}")

    def delay(self, attempt: int) -> float:
        """Back-off before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        return float(min(self.base_delay_s * (2**attempt), self.max_delay_s))


async def call_store(store_name: str, what: str, fn: Callable[[], Awaitable[_T]], policy: RetryPolicy) -> _T:
    """Await ``fn()`` under ``policy``; raise :class:`RetrieverError` naming the store when retries run out."""
    last: BaseException | None = None
    for attempt in range(policy.attempts):
        try:
            if policy.timeout_s is None:
                return await fn()
            return await asyncio.wait_for(fn(), policy.timeout_s)
        except StoreUnavailableError as exc:
            last = exc
        except StoreError:
            raise  # permanent: retrying cannot help
        except PrimeError:
            raise
        except TimeoutError:
            last = TimeoutError(f"no answer within {policy.timeout_s}s")
        except Exception as exc:
            last = exc
        if attempt + 1 < policy.attempts:
            delay = policy.delay(attempt)
            _log.warning(
                "store %s: %s failed (attempt %d/%d: %r); retrying in %.3fs",
                store_name, what, attempt + 1, policy.attempts, last, delay,
            )
            await asyncio.sleep(delay)
    raise RetrieverError(
        f"store {store_name!r}: {what} failed after {policy.attempts} attempt(s): {last!r}"
    ) from last
