"""Micro-batching: concurrent requests arriving within a short window share one batch call.

:class:`MicroBatcher` collects the requests submitted by concurrent coroutines. A batch is sent
when ``max_batch_size`` requests are waiting, or ``max_wait_s`` after its first request arrived,
whichever comes first. While no batch is running, nothing is gained by waiting for company: a request
then goes at the next event-loop iteration (with whatever was submitted in the same iteration), so a
lone search never pays the window; the window applies while a batch is busy, when waiting costs
nothing because the next batch could not start sooner anyway. One *batch task* then runs the user's
``process`` function on all of them, and each caller receives exactly its own item of the returned list.

Cancellation is isolated: a caller that is cancelled only cancels its own future. The batch
task is never awaited by a caller directly (callers await their private futures), so it runs to
completion for the others; a request cancelled before its batch starts is dropped from the
batch; a result for a cancelled future is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["BatchStats", "MicroBatcher"]

Req = TypeVar("Req")
Res = TypeVar("Res")

@dataclass
class BatchStats:
    """Cumulative counters: batches sent, requests served, the largest batch seen."""

    batches: int = 0
    requests: int = 0
    dropped_cancelled: int = 0
    max_batch: int = 0

    @property
    def mean_batch_size(self) -> float:
        """Mean number of requests per batch (0 before the first batch)."""
        return self.requests / self.batches if self.batches else 0.0


class MicroBatcher(Generic[Req, Res]):
    """Group concurrent :meth:`submit` calls into batches for one ``process`` call.

    Args:
        process: async function mapping a non-empty list of requests to a list of the same
            length whose items are results or exceptions (an exception is raised to that caller
            only). If ``process`` itself raises, every caller of the batch gets that exception.
        max_batch_size: a batch is sent as soon as this many requests wait (>= 1).
        max_wait_s: the longest a request waits for company before its batch is sent. ``0``
            still gathers the requests submitted in the same event-loop iteration.
        enabled: ``False`` sends every request alone, immediately (the no-batching baseline).
        wait_when_idle: ``True`` waits ``max_wait_s`` even while no batch is running (the behaviour
            before the idle flush; kept to measure what the window costs a lone request).
    """

    def __init__(
        self,
        process: Callable[[Sequence[Req]], Awaitable[Sequence[Res | BaseException]]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        enabled: bool = True,
        wait_when_idle: bool = False,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._process = process
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        self.wait_when_idle = wait_when_idle
        self.stats = BatchStats()
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # batches whose process() has not returned: a task lingers a loop iteration after its callers
        # were answered, and a caller that submits again at once must find the batcher idle
        self._busy: set[object] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Number of batch tasks currently running."""
        return len(self._tasks)

    async def submit(self, request: Req) -> Res:
        """Queue ``request`` and wait for its own result (or raise its own exception)."""
        if self._closed:
            raise RuntimeError("MicroBatcher is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Res] = loop.create_future()
        self._pending.append((request, fut))
        if not self.enabled or len(self._pending) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            idle = not self._busy and not self.wait_when_idle
            self._timer = loop.call_later(0.0 if idle else self.max_wait_s, self._flush)
        # Awaiting the private future: cancelling this caller cancels only `fut`.
        return await fut

    def _flush(self) -> None:
        """Send everything pending as one batch task (called by the timer or on a full batch)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = [(r, f) for r, f in self._pending if not f.done()]
        self.stats.dropped_cancelled += len(self._pending) - len(batch)
        self._pending = []
        if not batch:
            return
        token = object()
        self._busy.add(token)
        task = asyncio.get_running_loop().create_task(self._run(batch, token), name="micro-batch")
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, batch, token))

    def _finished(self, batch: list[tuple[Req, asyncio.Future[Res]]], token: object, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._busy.discard(token)
        if task.cancelled():  # cancelled before _run began (close(cancel=True) right after a flush)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(RuntimeError("MicroBatcher closed before the batch ran"))

    async def _run(self, batch: list[tuple[Req, asyncio.Future[Res]]], token: object) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        try:
            try:
                results = await self._process([r for r, _ in batch])
            finally:
                self._busy.discard(token)
            if len(results) != len(batch):
                raise RuntimeError(f"batch process returned {len(results)} results for {len(batch)} requests")
        except asyncio.CancelledError:
            # Only close() cancels batch tasks: tell the callers, then let the task end.
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(RuntimeError("MicroBatcher closed while the batch was running"))
            return
        except BaseException as exc:  # every caller of the batch gets the batch's failure
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), res in zip(batch, results, strict=True):
            if fut.done():  # the caller was cancelled meanwhile: skip it
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    async def drain(self) -> None:
        """Send what is pending now and wait until every running batch has finished."""
        if self._pending:
            self._flush()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, *, cancel: bool = False) -> None:
        """Refuse new requests, finish (or with ``cancel=True`` cancel) the batches in flight."""
        self._closed = True
        if cancel:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for _, fut in self._pending:
                if not fut.done():
                    fut.set_exception(RuntimeError("MicroBatcher closed"))
            self._pending = []
            for t in list(self._tasks):
                t.cancel()
        with contextlib.suppress(Exception):
            await self.drain()
