"""Group commit: the linger (after a busy batch the next one waits to gather more; a lone call never waits),
submitting several calls at once, and posting a call nobody waits for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from shards.batcher import Batcher


class Recorder:
    """A batch handler that notes each batch's size and when it left, and takes ``seconds`` to commit."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[tuple[float, int]] = []

    async def many(self, batch: Sequence[int]) -> list[int]:
        self.batches.append((time.monotonic(), len(batch)))
        await asyncio.sleep(self.seconds)
        return [n * 2 for n in batch]

    async def one(self, n: int) -> int:
        return (await self.many([n]))[0]


def batcher(recorder: Recorder, linger: float, linger_after: int = 4) -> Batcher[int, int]:
    return Batcher(recorder.many, recorder.one, None, max_batch=100, queue_limit=None, linger=linger,
                   linger_after=linger_after)  # fmt: skip


async def test_a_lone_call_goes_at_once_even_with_a_linger() -> None:
    recorder = Recorder()
    calls = batcher(recorder, linger=5.0)
    started = time.monotonic()
    assert await calls.submit(1) == 2
    assert await calls.submit(2) == 4  # after a batch of one: no linger either
    assert time.monotonic() - started < 1.0
    assert [size for _, size in recorder.batches] == [1, 1]


async def test_after_a_busy_batch_the_next_waits_and_gathers() -> None:
    recorder = Recorder()
    calls = batcher(recorder, linger=0.2)
    # The first call leaves alone, at once; the other nine gather behind it: a busy batch.
    assert await asyncio.gather(*(calls.submit(n) for n in range(10))) == [n * 2 for n in range(10)]
    # Calls arriving now, a few at a time, leave together 0.2 s after the busy batch.
    later = []
    for n in range(6):
        later.append(asyncio.ensure_future(calls.submit(n)))
        await asyncio.sleep(0.01)
    assert await asyncio.gather(*later) == [n * 2 for n in range(6)]
    assert [size for _, size in recorder.batches] == [1, 9, 6]
    (_, _), (busy, _), (gathered, _) = recorder.batches
    assert 0.15 <= gathered - busy < 1.0


async def test_a_full_batch_never_waits() -> None:
    recorder = Recorder()
    calls = Batcher(recorder.many, recorder.one, None, max_batch=5, queue_limit=None, linger=5.0, linger_after=1)
    started = time.monotonic()
    assert len(await asyncio.gather(*(calls.submit(n) for n in range(21)))) == 21
    assert time.monotonic() - started < 1.0  # one alone, then four full batches: none waited
    assert [size for _, size in recorder.batches] == [1, 5, 5, 5, 5]


async def test_a_slow_batch_leaves_no_wait_for_the_next() -> None:
    recorder = Recorder(seconds=0.3)
    calls = batcher(recorder, linger=0.1)
    first = asyncio.gather(*(calls.submit(n) for n in range(10)))  # one alone, then a busy batch of nine
    await asyncio.sleep(0.4)
    second = asyncio.gather(*(calls.submit(n) for n in range(3)))  # arrive while the busy batch commits
    await asyncio.gather(first, second)
    (_, _), (busy, nine), (after, three) = recorder.batches
    assert (nine, three) == (9, 3)
    assert 0.25 <= after - busy < 0.4  # it left as the busy batch committed: the linger had passed by then


async def test_submit_many_leaves_in_one_batch_and_answers_each() -> None:
    seen: list[list[int]] = []

    async def many(batch: Sequence[int]) -> list[int | BaseException]:
        seen.append(list(batch))
        return [ValueError(n) if n == 3 else n * 10 for n in batch]

    async def one(n: int) -> int | BaseException:
        return (await many([n]))[0]

    calls: Batcher[int, int | BaseException] = Batcher(many, one, None, queue_limit=None)
    results = await calls.submit_many([1, 2, 3, 4])
    assert seen == [[1, 2, 3, 4]]  # not the first alone and the rest after it
    assert results[:2] == [10, 20] and isinstance(results[2], ValueError) and results[3] == 40


async def test_a_posted_call_goes_out_with_nobody_waiting_and_its_future_holds_the_outcome() -> None:
    recorder = Recorder(seconds=0.05)
    calls = batcher(recorder, linger=0.0)
    posted = calls.post(21)  # not awaited: the batch leaves anyway
    await asyncio.sleep(0.2)
    assert posted.done() and posted.result() == 42
    assert [size for _, size in recorder.batches] == [1]


async def test_a_posted_call_in_a_failed_batch_gets_the_failure() -> None:
    async def broken(batch: Sequence[int]) -> list[int]:
        raise ConnectionRefusedError("the shard went down")

    async def alone(n: int) -> int:
        return (await broken([n]))[0]

    calls: Batcher[int, int] = Batcher(broken, alone, None, queue_limit=None)
    posted = calls.post(1)
    await asyncio.sleep(0.05)
    assert isinstance(posted.exception(), ConnectionRefusedError)
