"""Drive an async :class:`~prime_retriever.PredictiveRetriever` from sync and async framework code.

The retriever's micro-batcher and PREPARE tasks belong to one event loop. Frameworks call from
plain threads (``retrieve``, ``run``, ``invoke``) and from their own loops (``aretrieve``,
``run_async``, ``ainvoke``), often a fresh loop per call. So the retriever lives on one event loop
in a daemon thread: a sync caller waits for the result, an async caller awaits it without blocking
its own loop, and a PREPARE is scheduled there and returns at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from prime_retriever import PredictiveRetriever, RetrieverError

__all__ = ["RetrieverThread"]

_T = TypeVar("_T")
#: A retriever, or how to open one (awaited on the thread's loop at first use).
RetrieverSource = PredictiveRetriever | Callable[[], Awaitable[PredictiveRetriever]]


class RetrieverThread:
    """One :class:`PredictiveRetriever` on its own event loop thread."""

    def __init__(self, source: RetrieverSource) -> None:
        self._source = source
        self._retriever: PredictiveRetriever | None = source if isinstance(source, PredictiveRetriever) else None
        self._opening: asyncio.Lock | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="prime-retriever-loop", daemon=True)
        self._thread.start()
        self._closed = False

    async def _get(self) -> PredictiveRetriever:
        if self._retriever is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._retriever is None:
                    assert not isinstance(self._source, PredictiveRetriever)
                    self._retriever = await self._source()
        return self._retriever

    async def _with(self, fn: Callable[[PredictiveRetriever], Awaitable[_T]]) -> _T:
        return await fn(await self._get())

    def _submit(self, fn: Callable[[PredictiveRetriever], Awaitable[_T]]) -> concurrent.futures.Future[_T]:
        if self._closed:
            raise RetrieverError("the retriever thread is closed")
        coro: Coroutine[Any, Any, _T] = self._with(fn)
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, fn: Callable[[PredictiveRetriever], Awaitable[_T]]) -> _T:
        """Run ``fn(retriever)`` on the retriever's loop and wait for it (from any thread but that loop's)."""
        if threading.current_thread() is self._thread:
            raise RetrieverError("RetrieverThread.call from its own loop would wait for itself; use acall")
        return self._submit(fn).result()

    async def acall(self, fn: Callable[[PredictiveRetriever], Awaitable[_T]]) -> _T:
        """Await ``fn(retriever)`` run on the retriever's loop, without blocking the caller's loop."""
        return await asyncio.wrap_future(self._submit(fn))

    def schedule(self, fn: Callable[[PredictiveRetriever], Awaitable[_T]]) -> concurrent.futures.Future[_T]:
        """Start ``fn(retriever)`` and return at once (a PREPARE before the user's message arrives)."""
        return self._submit(fn)

    def close(self) -> None:
        """Close the retriever (and the store it owns), then stop the loop and its thread (idempotent)."""
        if self._closed:
            return
        if self._retriever is not None:
            rt = self._retriever
            asyncio.run_coroutine_threadsafe(rt.close(), self._loop).result()
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
