"""What /readyz and /metrics report about the databases, Redis and RabbitMQ: probed at most once per
``CACHE_PERIOD`` per gateway process, on pools of their own.

A probe never uses the pools that move money: a shard whose money pool is exhausted by load is still up, and a
flood of scrapes must not take connections from transfers. Concurrent requests share one probe (single-flight),
and its answer is kept for ``CACHE_PERIOD``, so the databases see at most one probe query per shard per second
per process whatever the request rate. Every check is bounded by ``PROBE_TIMEOUT``, so an answer is never older
than ``CACHE_PERIOD + PROBE_TIMEOUT`` and a request never waits longer than about ``PROBE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import orjson
import redis.exceptions

from shardpay.config import Settings
from shards import reconcile_runs
from shards.errors import TRANSIENT
from shards.reconcile_runs import LastRun

T = TypeVar("T")

# A probe must not wait on a sick dependency: past this, it counts as down.
PROBE_TIMEOUT = 1.0
# How long one probe's answer serves every /readyz and /metrics request of this process.
CACHE_PERIOD = 1.0
# Anything a database or Redis can answer with counts as down (say the database was dropped): a probe answers,
# it never fails with a 500.
PROBE_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT, asyncpg.PostgresError, asyncpg.InternalClientError, redis.exceptions.RedisError,
)  # fmt: skip
# Seen in pg_stat_activity, so an operator can tell the probes' connections from the money pools'.
APPLICATION_NAME = "shardpay-probe"

# Outbox lag from two index lookups, neither of which reads more rows as the backlog grows: the oldest unpublished
# row is the first entry of the partial index outbox_unpublished, the newest row the last of the primary key.
# Every row from the one to the other may be unpublished: ``last_seq - first_seq + 1`` is an upper bound (seqs
# skipped by rolled-back inserts, and rows published out of order, count too) where count(*) read every row.
OUTBOX_LAG = """
SELECT (SELECT max(seq) FROM outbox) AS last_seq, oldest.seq AS first_seq,
       coalesce(extract(epoch FROM now() - oldest.created_at), 0)::float8 AS oldest_age,
       (SELECT count(*) FROM psp_work WHERE dead_reason IS NOT NULL) AS dead_letters
FROM (SELECT) AS here
LEFT JOIN LATERAL (
    SELECT seq, created_at FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1
) AS oldest ON true
"""


@dataclass(frozen=True)
class OutboxLag:
    """A shard's unpublished outbox rows (an upper bound) and the age of the oldest (0 when there are none)."""

    unpublished: int
    oldest_age: float
    # The shard's dead-lettered PSP work, read in the same round trip (the partial index psp_work_dead: it costs
    # what there is to count, nothing when the queue is healthy).
    dead_letters: int = 0


async def outbox_lag(pool: asyncpg.Pool) -> OutboxLag:
    """The estimate of ``OUTBOX_LAG`` on one shard."""
    # The acquire's timeout also bounds the release: asyncpg waits that long for a cancelled query's
    # acknowledgement and then closes the connection, so a hung server cannot keep the one connection forever.
    async with pool.acquire(timeout=PROBE_TIMEOUT) as conn:
        row = await conn.fetchrow(OUTBOX_LAG)
    assert row is not None
    dead = int(row["dead_letters"])
    if row["first_seq"] is None:
        return OutboxLag(0, 0.0, dead)
    return OutboxLag(int(row["last_seq"]) - int(row["first_seq"]) + 1, float(row["oldest_age"]), dead)


async def last_reconcile(pool: asyncpg.Pool) -> LastRun | None:
    """The most recently finished reconciliation run: one index lookup, in the same probe as the rest."""
    async with pool.acquire(timeout=PROBE_TIMEOUT) as conn:  # bounded release, as in outbox_lag
        return await reconcile_runs.last_run(conn)


# On a replica: 0 when it has replayed all it received, else how old the last transaction it replayed is (an
# idle primary sends nothing new, so "caught up" must not read as a growing lag).
REPLICA_LAG = """
SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8
"""


async def replica_lag(pool: asyncpg.Pool) -> float:
    async with pool.acquire(timeout=PROBE_TIMEOUT) as conn:  # bounded release, as in outbox_lag
        lag: float = await conn.fetchval(REPLICA_LAG)
        return lag


async def answers(pool: asyncpg.Pool) -> bool:
    async with pool.acquire(timeout=PROBE_TIMEOUT) as conn:  # bounded release, as in outbox_lag
        return bool(await conn.fetchval("SELECT true"))


@dataclass(frozen=True)
class Snapshot:
    """One probe of everything: ``lags[n]`` is shard n's outbox lag, None if the shard did not answer."""

    lags: tuple[OutboxLag | None, ...]
    control: bool
    redis: bool
    rabbitmq: bool
    # The PSP's circuit breakers as the executors last published them ({} if none is running, None if Redis
    # could not say): the PSP being out degrades shardpay, it does not make it unready.
    psp: dict[str, str] | None = None
    # The last reconciliation run (None: none stored, or the control database could not say), for /metrics.
    reconcile: LastRun | None = None
    # Seconds each shard's read replica is behind (None: no replica, or it did not answer).
    replica_lags: tuple[float | None, ...] = ()

    def checks(self) -> dict[str, bool]:
        shards = {f"shard_{n}": lag is not None for n, lag in enumerate(self.lags)}
        return {**shards, "control": self.control, "redis": self.redis, "rabbitmq": self.rabbitmq}


@dataclass(frozen=True)
class ProbePools:
    """One small pool per shard and one for the control database, for probes only."""

    control: asyncpg.Pool
    shards: tuple[asyncpg.Pool, ...]
    replicas: tuple[asyncpg.Pool | None, ...] = ()  # per shard, where SHARDPAY_SHARD_REPLICA_DSNS names one


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset query on release: it would be a second round trip per probe, and probes keep no session state."""


async def _probe_pool(dsn: str) -> asyncpg.Pool:
    # min_size 0: nothing connects until the first probe, so a shard that is down cannot delay start-up.
    # statement_timeout ends on the server too what the client gave up on (a probe queued behind a lock).
    pool = await asyncpg.create_pool(
        dsn, min_size=0, max_size=1, timeout=PROBE_TIMEOUT, command_timeout=PROBE_TIMEOUT, reset=_keep_session,
        server_settings={"application_name": APPLICATION_NAME, "statement_timeout": str(int(PROBE_TIMEOUT * 1000))},
    )  # fmt: skip
    assert pool is not None
    return pool


def _forget(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report a check that failed after we stopped waiting


async def within(seconds: float, check: Awaitable[T]) -> T | None:
    """``check``'s result, or None if it failed or took longer than ``seconds``.

    A check that overruns is cancelled and left to finish its cleanup alone: asyncpg waits for the server to
    acknowledge a cancelled query before it releases the connection, and a hung server never does. An error
    outside ``PROBE_ERRORS`` (a bug) counts as down too, since a probe answers rather than failing with a 500,
    and is logged so that it does not pass for an outage."""
    task = asyncio.ensure_future(check)
    try:
        await asyncio.wait((task,), timeout=seconds)
    finally:
        if not task.done():
            task.cancel()
            task.add_done_callback(_forget)
    if not task.done():
        return None
    error = task.exception()
    if error is None:
        return task.result()
    if not isinstance(error, PROBE_ERRORS):
        _log_unexpected(error)
    return None


def _log_unexpected(error: BaseException) -> None:
    line = {"ts": round(time.time(), 3), "event": "probe.error", "error": type(error).__name__}
    sys.stderr.write(orjson.dumps(line).decode() + "\n")


async def _nothing() -> None:
    return None


class Probe:
    """The cached, single-flight probe behind /readyz and /metrics (see the module docstring)."""

    def __init__(
        self, pools: ProbePools, redis_ok: Callable[[], Awaitable[bool]], rabbitmq_ok: Callable[[], bool],
        period: float = CACHE_PERIOD, timeout: float = PROBE_TIMEOUT,
        psp: Callable[[], Awaitable[dict[str, str] | None]] | None = None,
    ) -> None:  # fmt: skip
        self._pools = pools
        self._psp = psp
        self._redis_ok = redis_ok
        self._rabbitmq_ok = rabbitmq_ok
        self._period = period
        self._timeout = timeout
        self._last: Snapshot | None = None
        self._fresh_until = 0.0
        self._flight: asyncio.Task[Snapshot] | None = None

    async def snapshot(self) -> Snapshot:
        """The last probe's answer if it is younger than the cache period, else the next probe's."""
        if self._last is not None and time.monotonic() < self._fresh_until:
            return self._last
        if self._flight is None:
            self._flight = asyncio.create_task(self._probe())
        # Shielded: a client hanging up must not cancel the probe that other requests are waiting for.
        return await asyncio.shield(self._flight)

    async def _probe(self) -> Snapshot:
        try:
            found = await self._run()
            # Fresh from when it was answered: one probe per period at most, however long a probe takes.
            self._last, self._fresh_until = found, time.monotonic() + self._period
            return found
        finally:
            self._flight = None

    async def _run(self) -> Snapshot:
        lags = asyncio.gather(*(within(self._timeout, outbox_lag(pool)) for pool in self._pools.shards))
        control = within(self._timeout, answers(self._pools.control))
        redis = within(self._timeout, self._redis_ok())
        psp = within(self._timeout, self._psp()) if self._psp is not None else _nothing()
        reconciled = within(self._timeout, last_reconcile(self._pools.control))
        behind = asyncio.gather(*(within(self._timeout, replica_lag(pool)) if pool is not None else _nothing()
                                  for pool in self._pools.replicas))  # fmt: skip
        found, control_ok, redis_ok, breakers, last, replicas = await asyncio.gather(
            lags, control, redis, psp, reconciled, behind
        )
        return Snapshot(tuple(found), control_ok is True, redis_ok is True, self._rabbitmq_ok(), breakers, last,
                        tuple(replicas))  # fmt: skip

    async def close(self) -> None:
        """Stop a probe in flight (at shutdown, before its pools close)."""
        flight = self._flight
        if flight is not None:
            flight.cancel()
            await asyncio.wait((flight,))  # waits for it to end without taking on its CancelledError


@contextlib.asynccontextmanager
async def open_probe(
    settings: Settings,
    redis_ok: Callable[[], Awaitable[bool]],
    rabbitmq_ok: Callable[[], bool],
    psp: Callable[[], Awaitable[dict[str, str] | None]] | None = None,
) -> AsyncIterator[Probe]:
    """The gateway's probe and its pools; at shutdown it stops a probe in flight and closes the pools without
    waiting long on a connection that a stuck probe still holds."""
    pools = [await _probe_pool(dsn) for dsn in (settings.control_dsn, *settings.shard_dsns)]
    replicas = [await _probe_pool(dsn) if dsn else None for dsn in settings.shard_replica_dsns]
    probe = Probe(ProbePools(pools[0], tuple(pools[1:]), tuple(replicas)), redis_ok, rabbitmq_ok, psp=psp)
    try:
        yield probe
    finally:
        await probe.close()
        for pool in [*pools, *(r for r in replicas if r is not None)]:
            try:
                await asyncio.wait_for(pool.close(), PROBE_TIMEOUT)
            except TimeoutError:
                pool.terminate()
