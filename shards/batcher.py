"""Group commit per shard: concurrent transfers on one shard are opened together, one transaction per batch.

Batching is natural: a transfer that finds a free slot goes at once, alone (no added latency when idle);
while ``max_inflight`` batches are committing, new transfers queue and leave together in the next batch.
Past ``queue_limit`` waiting transfers the shard answers 503 at once: latency stays bounded and memory flat
instead of the queue growing without end. A transfer is acknowledged only after its batch has committed.
"""

from __future__ import annotations

import asyncio
from collections import deque

import asyncpg

from shardpay.domain.errors import ApiError
from shards import ledger
from shards.errors import TRANSIENT
from shards.ledger import Applied, OpenTransfer

_Waiter = tuple[OpenTransfer, "asyncio.Future[Applied]"]


def shard_overloaded(shard: int) -> ApiError:
    return ApiError.unavailable("shard_overloaded", f"Shard {shard} is at capacity; retry with the same key.")


class Batcher:
    def __init__(
        self, pool: asyncpg.Pool, shard: int, max_batch: int = 64, max_inflight: int = 4, queue_limit: int = 2_000
    ) -> None:
        self._pool = pool
        self._shard = shard
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue_limit = queue_limit
        self._queue: deque[_Waiter] = deque()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def open_transfer(self, request: OpenTransfer) -> Applied:
        if len(self._queue) >= self._queue_limit:
            raise shard_overloaded(self._shard)
        future: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._queue and len(self._running) < self._max_inflight:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            task = asyncio.create_task(self._apply(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._dispatch()

    async def _apply(self, batch: list[_Waiter]) -> None:
        requests = [request for request, _ in batch]
        try:
            results = await ledger.open_transfers(self._pool, requests)
        except TRANSIENT as exc:
            _fail(batch, exc)
        except asyncpg.PostgresError:
            # One request broke the batch (a duplicate key racing past Redis, say): apply them one by one,
            # so each gets its own answer and no neighbour fails for it.
            await self._apply_singly(batch)
        except BaseException as exc:
            _fail(batch, exc)
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _apply_singly(self, batch: list[_Waiter]) -> None:
        outcomes = await asyncio.gather(
            *(ledger.open_transfer(self._pool, request) for request, _ in batch), return_exceptions=True
        )
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _fail(batch: list[_Waiter], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
