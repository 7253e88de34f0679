"""MicroBatcher: grouping, result distribution, error isolation and cancellation (no sleeps asserted)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from prime_retriever.retrieval.micro_batcher import MicroBatcher


class Recorder:
    """A batch function that doubles numbers, records its batches, and can be gated or fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.fail: BaseException | None = None

    async def __call__(self, reqs: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(reqs))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"bad {r}") if r < 0 else 2 * r for r in reqs]


async def _started(mb: MicroBatcher[int, int], rec: Recorder, items: range) -> list[asyncio.Task[int]]:
    """Submit ``items`` as concurrent callers and wait until their first batch has started."""
    tasks = [asyncio.create_task(mb.submit(i)) for i in items]
    while not rec.batches:
        await asyncio.sleep(0)
    return tasks


async def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    rec = Recorder()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=8, max_wait_s=0.05)
    out = await asyncio.gather(*(mb.submit(i) for i in range(20)))
    assert out == [2 * i for i in range(20)]
    assert [len(b) for b in rec.batches] == [8, 8, 4]  # full batches go at once, the rest on the timer
    assert mb.stats.batches == 3 and mb.stats.requests == 20 and mb.stats.max_batch == 8
    await mb.close()


async def test_disabled_batcher_sends_each_request_alone() -> None:
    rec = Recorder()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, enabled=False)
    assert await asyncio.gather(*(mb.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert all(len(b) == 1 for b in rec.batches)


async def test_per_request_errors_reach_only_their_caller() -> None:
    rec = Recorder()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=4, max_wait_s=0.05)
    res = await asyncio.gather(mb.submit(1), mb.submit(-1), mb.submit(3), return_exceptions=True)
    assert res[0] == 2 and res[2] == 6
    assert isinstance(res[1], ValueError) and "bad -1" in str(res[1])


async def test_batch_failure_reaches_every_caller_of_that_batch() -> None:
    rec = Recorder()
    rec.fail = RuntimeError("store down")
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=3, max_wait_s=0.05)
    res = await asyncio.gather(*(mb.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in res)
    rec.fail = None
    assert await mb.submit(5) == 10  # the batcher keeps working


async def test_cancelling_a_caller_mid_batch_does_not_cancel_the_batch() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=4, max_wait_s=0.05)
    tasks = await _started(mb, rec, range(4))
    tasks[1].cancel()
    await asyncio.sleep(0)
    rec.gate.set()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(res[1], asyncio.CancelledError)
    assert [res[0], res[2], res[3]] == [0, 4, 6]
    assert mb.in_flight == 0


async def test_a_request_cancelled_before_its_batch_starts_is_dropped() -> None:
    rec = Recorder()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=10, max_wait_s=0.05, wait_when_idle=True)
    tasks = [asyncio.create_task(mb.submit(i)) for i in range(3)]
    await asyncio.sleep(0)  # all three are queued, the timer has not fired
    tasks[0].cancel()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(res[0], asyncio.CancelledError) and res[1:] == [2, 4]
    assert rec.batches == [[1, 2]] and mb.stats.dropped_cancelled == 1


async def test_close_drains_and_refuses_new_requests() -> None:
    rec = Recorder()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=10, max_wait_s=10.0, wait_when_idle=True)
    task = asyncio.create_task(mb.submit(7))
    await asyncio.sleep(0)
    await mb.close()  # sends the pending request instead of waiting 10 s
    assert await task == 14
    with pytest.raises(RuntimeError, match="closed"):
        await mb.submit(1)


@pytest.mark.parametrize("started", [False, True])
async def test_close_with_cancel_answers_every_caller(started: bool) -> None:
    """close(cancel=True) fails the callers of a batch whether its task had begun (stopped at the
    gate) or not yet (cancelled right after the flush): nobody waits for ever."""
    rec = Recorder()
    rec.gate = asyncio.Event()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=2, max_wait_s=10.0)
    tasks = [asyncio.create_task(mb.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)  # both submitted; the full batch is flushed into a task
    if started:
        while not rec.batches:
            await asyncio.sleep(0)
    await mb.close(cancel=True)
    done, pending = await asyncio.wait(tasks, timeout=5.0)
    assert not pending
    for t in done:
        with pytest.raises(RuntimeError, match="closed"):
            t.result()
    assert len(rec.batches) == int(started)


async def _iterations_until_sent(mb: MicroBatcher[int, int], rec: Recorder, limit: int = 20) -> int | None:
    """Event-loop iterations after a lone submit until its batch starts (None: not within ``limit``)."""
    task = asyncio.create_task(mb.submit(3))
    for i in range(limit):
        await asyncio.sleep(0)
        if rec.batches:
            assert await task == 6
            return i
    await mb.close()  # sends it (close drains what is pending)
    assert await task == 6
    return None


async def test_a_lone_request_does_not_wait_for_company_while_no_batch_runs() -> None:
    """No batch running: the request goes at the next loop iteration, not after the 10 s window
    (counted in loop iterations, not seconds); ``wait_when_idle=True`` keeps the window."""
    rec = Recorder()
    sent = await _iterations_until_sent(MicroBatcher(rec, max_batch_size=10, max_wait_s=10.0), rec)
    assert sent is not None and sent <= 3
    rec_w = Recorder()
    waited = await _iterations_until_sent(
        MicroBatcher(rec_w, max_batch_size=10, max_wait_s=10.0, wait_when_idle=True), rec_w)
    assert waited is None


async def test_a_caller_that_submits_again_at_once_finds_the_batcher_idle() -> None:
    """The batch task ends an iteration after its callers are answered; a caller that searches again
    right away (a loop of searches) must not pay the window for that."""
    rec = Recorder()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=10, max_wait_s=10.0)

    async def twice() -> int:
        await mb.submit(1)
        return await mb.submit(2)  # submitted in the iteration that answered the first

    task = asyncio.create_task(twice())
    for _ in range(10):
        await asyncio.sleep(0)
        if len(rec.batches) == 2:
            break
    assert rec.batches == [[1], [2]]
    assert await task == 4
    await mb.close()


async def test_idle_flush_still_groups_requests_of_one_iteration_and_busy_ones_wait() -> None:
    """Requests submitted together while idle share one batch; those that arrive while a batch
    runs wait for the window and go together in the next."""
    rec = Recorder()
    rec.gate = asyncio.Event()
    mb: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=10, max_wait_s=0.05)
    first = await _started(mb, rec, range(3))
    later = [asyncio.create_task(mb.submit(i)) for i in range(3, 6)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert rec.batches == [[0, 1, 2]]  # the busy window holds the later three back
    rec.gate.set()
    assert await asyncio.gather(*first, *later) == [0, 2, 4, 6, 8, 10]
    assert rec.batches == [[0, 1, 2], [3, 4, 5]]


async def test_invalid_configuration() -> None:
    rec = Recorder()
    with pytest.raises(ValueError):
        MicroBatcher(rec, max_batch_size=0)
    with pytest.raises(ValueError):
        MicroBatcher(rec, max_wait_s=-1)
