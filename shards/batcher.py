"""Group commit: concurrent calls of one step are applied together, one transaction per batch.

Used per shard for each money step, and by the event consumers for their prefetch window. Batching is
natural: a call that finds a free slot goes at once, alone (no added latency when idle); while
``max_inflight`` batches are committing, new calls queue and leave together in the next batch. One batch in
flight is true group commit: the next batch gathers everything that arrived during the last commit. Under
load a batch may also linger (see ``__init__``), the way PostgreSQL's commit_delay waits only when
commit_siblings other transactions are active. Past ``queue_limit`` waiting calls the caller gets
``overloaded()`` at once (a shard answers 503): latency stays bounded and memory flat instead of the queue
growing without end. A call returns only after its batch has committed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg

from shardpay.domain.errors import ApiError
from shards.errors import TRANSIENT

Req = TypeVar("Req")
Res = TypeVar("Res")


def shard_overloaded(shard: int) -> ApiError:
    return ApiError.unavailable("shard_overloaded", f"Shard {shard} is at capacity; retry with the same key.")


class Batcher(Generic[Req, Res]):
    def __init__(
        self,
        many: Callable[[Sequence[Req]], Awaitable[list[Res]]],
        one: Callable[[Req], Awaitable[Res]],
        overloaded: Callable[[], BaseException] | None,
        max_batch: int = 64,
        max_inflight: int = 1,
        queue_limit: int | None = 2_000,
        linger: float = 0.0,
        linger_after: int = 1,
    ) -> None:
        """``queue_limit`` None: no limit (the caller bounds what can wait), and ``overloaded`` is never called.

        ``linger``: after a batch of at least ``linger_after`` calls (a sign of load), the next batch that is not
        full leaves no sooner than ``linger`` seconds after that one left, so it gathers more calls and each pays
        less of a batch's fixed cost. After a smaller batch nothing waits: a lone call goes at once, as before.
        """
        if queue_limit is not None and overloaded is None:
            raise ValueError("a queue limit needs an overloaded() to raise past it")
        self._overloaded = overloaded
        self._many = many
        self._one = one
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue_limit = queue_limit
        self._linger = linger
        self._linger_after = linger_after
        self._last = 0.0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._queue: deque[tuple[Req, asyncio.Future[Res]]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def submit(self, request: Req, bounded: bool = True) -> Res:
        """Queue ``request`` for the next batch and wait for its result; ``bounded=False`` admits it past the
        queue limit (work that finishes what was already accepted, which refusing would only leave for recovery)."""
        return await self.post(request, bounded)

    def post(self, request: Req, bounded: bool = True) -> asyncio.Future[Res]:
        """Queue ``request`` for the next batch without waiting: its future holds the result once the batch has
        committed. The call goes out whether or not anyone awaits the future."""
        if bounded and self._queue_limit is not None and len(self._queue) >= self._queue_limit:
            assert self._overloaded is not None
            raise self._overloaded()
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._dispatch()
        return future

    async def submit_many(self, requests: Sequence[Req]) -> list[Res | BaseException]:
        """Queue ``requests`` at once, so they leave in the same batch (as far as ``max_batch`` allows); each gets
        its own result or exception, in order. Never refused: the caller bounds what it submits."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Res]] = [loop.create_future() for _ in requests]
        self._queue.extend(zip(requests, futures, strict=True))
        self._dispatch()
        return await asyncio.gather(*futures, return_exceptions=True)

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and len(self._running) < self._max_inflight:
            full = len(self._queue) >= self._max_batch
            wait = self._last + self._linger - loop.time() if self._busy and not full else 0.0
            if wait > 0:
                if self._timer is None:
                    self._timer = loop.call_later(wait, self._wake)
                return
            self._last = loop.time()
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            self._busy = len(batch) >= self._linger_after
            task = asyncio.create_task(self._apply(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._dispatch()

    async def _apply(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        try:
            results = await self._many([request for request, _ in batch])
        except TRANSIENT as exc:
            _settle(batch, [exc] * len(batch))
        except asyncpg.PostgresError:
            # One call broke the batch (a duplicate key racing past Redis, say): apply them one by one,
            # so each gets its own answer and no neighbour fails for it.
            _settle(batch, await asyncio.gather(*(self._one(r) for r, _ in batch), return_exceptions=True))
        except BaseException as exc:
            _settle(batch, [exc] * len(batch))
            raise
        else:
            _settle(batch, results)


def _settle(batch: Sequence[tuple[object, asyncio.Future[Res]]], outcomes: Sequence[Res | BaseException]) -> None:
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():
            continue  # its request gave up (timeout, disconnect); the effect stands and a retry replays it
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
