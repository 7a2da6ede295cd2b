"""The PSP executor (``shardpay execute``): charges payment orders, sends payouts and refunds, exactly once.

It is fed by the work itself: every order, payout and refund is written with a row of its shard's ``psp_work``
queue in the transaction that creates it (the transactional outbox, with the work row as its own message), and
each executor polls every shard for due rows, claimed with SKIP LOCKED so that any number of executors share the
work. A claim is a lease: a worker that dies mid-call leaves its rows due again after ``SHARDPAY_PSP_LEASE``.

For each piece of work, in order:
- if an earlier call may have reached the PSP (a timeout, a crash, a 'pending' answer), ask the PSP by the
  idempotency key (the object's own id) what became of it, and never call again if it knows;
- otherwise call, under that key;
- a final answer (succeeded, paid, failed, a decline, a 4xx) is made final in the shards, once; 'pending' is
  looked up again ``SHARDPAY_PSP_SWEEP_AFTER`` seconds later unless the PSP's webhook settles it first;
- a transient failure (5xx, reset, timeout) is tried again after exponential backoff with full jitter, and counts
  against the operation's circuit breaker; while a breaker is open its work is not claimed at all (it waits,
  'processing'), and a probe closes the breaker once the PSP is back;
- work that cannot finish (a malformed answer, an unexpected error, transient failures past
  ``SHARDPAY_PSP_MAX_ATTEMPTS``) is dead-lettered with its reason, for ``shardpay dlq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback

import asyncpg
import redis.asyncio as aioredis

import psp
from events.logs import emit
from shardpay import tracing
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.resilience import Breaker, State, full_jitter
from shardpay.services import breakers, sweeper
from shardpay.services.psp_work import KINDS, Kind, Outcome
from shardpay.services.wakeups import Wakeups
from shards import work
from shards.errors import TRANSIENT
from shards.pools import Shards
from shards.work import Claimed

# A shard (or the home shard a result is reported to) went away: the work comes back by itself.
_SHARD_GONE: tuple[type[BaseException], ...] = (*TRANSIENT, ApiError)
CLAIM_BATCH = 32
MALFORMED_LIMIT = 3  # malformed answers in a row before a piece of work is dead-lettered


class Executor:
    def __init__(self, shards: Shards, client: psp.Psp, settings: Settings, concurrency: int = 64) -> None:
        self.shards = shards
        self.client = client
        self.settings = settings
        self.breakers = {kind.operation: Breaker(kind.operation, cooldown=settings.psp_breaker_cooldown)
                         for kind in KINDS.values()}  # fmt: skip
        self._slots = concurrency
        self._free = concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeups = Wakeups(settings.shard_dsns, settings.db_timeout)
        self._more: set[int] = set()  # shards whose last claim was full: more may be due there

    async def run(self, stop: asyncio.Event) -> None:
        loops = [self._shard_loop(shard, stop) for shard in range(len(self.shards.pools))]
        stopping = asyncio.ensure_future(self._wake_on(stop))
        try:
            await asyncio.gather(*loops, sweeper.run(self.shards, self.settings, stop), self._wakeups.run(stop))
        finally:
            stopping.cancel()
            await self._drain()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeups.wake_all()

    async def _shard_loop(self, shard: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            claimed: list[Claimed] = []
            try:
                claimed = await self._claim(shard)
            except _SHARD_GONE as exc:
                emit("executor.shard_unavailable", shard=shard, error=type(exc).__name__)
            except Exception as exc:  # a bug: logged, and this shard is tried again after the pause
                emit("executor.error", shard=shard, error=type(exc).__name__, traceback=traceback.format_exc())
            for item in claimed:
                self._start(shard, item)
            if not claimed:
                await self._wakeups.wait(shard, self.settings.executor_poll)

    async def _claim(self, shard: int) -> list[Claimed]:
        """Due work of this shard, as much as there are free slots and breakers allow."""
        kinds = list(KINDS.values())
        if all(self.breakers[k.operation].state is State.CLOSED for k in kinds):
            return await self._claim_kinds(shard, [k.name for k in kinds], CLAIM_BATCH)
        claimed: list[Claimed] = []
        for kind in kinds:
            breaker = self.breakers[kind.operation]
            want = breaker.capacity(min(self._free, CLAIM_BATCH))
            got = await self._claim_kinds(shard, [kind.name], want)
            if breaker.state is not State.CLOSED and not got and want:
                breaker.release()  # the probe found nothing to probe with
            claimed.extend(got)
        return claimed

    async def _claim_kinds(self, shard: int, kinds: list[str], limit: int) -> list[Claimed]:
        """Claim up to ``limit`` rows, within the free slots: reserved before the query, since every shard's loop
        claims at once, and what the query did not fill is given back."""
        want = min(limit, self._free)
        if want <= 0:
            return []
        self._free -= want
        try:
            claimed = await work.claim(self.shards.pool(shard), kinds, want, self.settings.psp_lease)
        finally:
            self._free += want
        self._free -= len(claimed)
        if len(claimed) == want:
            self._more.add(shard)
        else:
            self._more.discard(shard)
        return claimed

    def _start(self, shard: int, item: Claimed) -> None:
        task = asyncio.create_task(self._handle(shard, item))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._free += 1
        for shard in self._more:  # a free slot: due work that did not fit may be claimed now
            self._wakeups.wake(shard)

    async def _drain(self) -> None:
        # Work in flight finishes (its lease would make it wait otherwise), within the supervisor's grace.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=8.0)

    async def _handle(self, shard: int, item: Claimed) -> None:
        pool = self.shards.pool(shard)
        try:
            await self._handle_once(shard, item)
        except _SHARD_GONE as exc:
            # A shard went away mid-step: the lease brings the work back, and it starts by asking the PSP.
            emit("executor.shard_unavailable", shard=shard, work=item.id, error=type(exc).__name__)
        except Exception as exc:  # a bug: never lose the work, never spin on it
            emit("executor.error", work=item.id, kind=item.kind, error=type(exc).__name__,
                 traceback=traceback.format_exc())  # fmt: skip
            with contextlib.suppress(*_SHARD_GONE):
                await self._failed(pool, item, f"{type(exc).__name__}: {exc}", dead_after=MALFORMED_LIMIT)

    async def _handle_once(self, shard: int, item: Claimed) -> None:
        kind = KINDS[item.kind]
        pool = self.shards.pool(shard)
        row = (await kind.rows(pool, [item.id])).get(item.id)
        if row is None:
            await work.bury(pool, item.id, f"no {item.kind} row for this work")
            return
        with tracing.span(f"psp work {item.kind}", request_id=row["request_id"], work=item.id,
                          psp_state=item.psp_state):  # fmt: skip
            await self._step(shard, kind, item, row)

    async def _step(self, shard: int, kind: Kind, item: Claimed, row: asyncpg.Record) -> None:
        breaker = self.breakers[kind.operation]
        pool = self.shards.pool(shard)
        try:
            outcome = await self._ask(kind, item, row)
        except psp.PspRejected as exc:
            breaker.record(True)
            outcome = Outcome("failed", None, exc.code)
        except (psp.PspUnavailable, psp.PspOutcomeUnknown) as exc:
            breaker.record(False)
            await self._failed(pool, item, f"{type(exc).__name__}: {exc}", self.settings.psp_max_attempts)
            return
        except psp.PspMalformed as exc:
            breaker.record(True)  # it answered: not an outage, but not an answer either
            await self._failed(pool, item, f"malformed answer: {exc}", dead_after=MALFORMED_LIMIT)
            return
        else:
            breaker.record(True)
        if not outcome.final:
            await work.retry(pool, item.id, self.settings.psp_sweep_after, "pending", None, counted=False)
            return
        await kind.finish(self.shards, row, outcome)

    async def _ask(self, kind: Kind, item: Claimed, row: asyncpg.Record) -> Outcome:
        if item.psp_state in ("unknown", "pending"):
            found = await kind.lookup(self.client, row)
            if found is not None:
                return found
        return await kind.call(self.client, row)

    async def _failed(self, pool: asyncpg.Pool, item: Claimed, error: str, dead_after: int) -> None:
        attempts = item.attempts + 1
        if attempts >= dead_after:
            await work.bury(pool, item.id, f"gave up after {attempts} attempts: {error}"[:500], attempts)
            emit("executor.dead_lettered", work=item.id, kind=item.kind, attempts=attempts, error=error[:200])
            return
        delay = full_jitter(attempts, self.settings.psp_retry_base, self.settings.psp_retry_cap)
        await work.retry(pool, item.id, delay, "unknown", error[:500], counted=True)


async def run_executor(settings: Settings, stop: asyncio.Event) -> None:
    """``shardpay execute``: until ``stop``."""
    from shardpay import redis_client
    from shards.pools import open_shards

    redis = redis_client.connect(settings)
    try:
        client = psp.connect(settings)
        async with open_shards(settings) as shards:
            executor = Executor(shards, client, settings)
            published = asyncio.create_task(_publish_breakers(redis, executor, stop))
            try:
                await executor.run(stop)
            finally:
                published.cancel()
                await client.aclose()
    finally:
        await redis.aclose()


async def _publish_breakers(redis: aioredis.Redis, executor: Executor, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await breakers.publish(redis, executor.breakers.values())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
