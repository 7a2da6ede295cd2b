"""The outbox relay: every shard's unpublished outbox rows, in seq order, to the ``shardpay.events`` exchange.

A batch is claimed ``FOR UPDATE SKIP LOCKED`` inside a transaction, published as one message (``events.pack``)
with a publisher confirm, and marked published in the same transaction only after the confirm. A crash or a
broker failure anywhere before the commit leaves the rows unpublished, and they go again: delivery is at least
once, and consumers are idempotent by event id.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
import orjson
from opentelemetry.trace import Link, SpanKind

from events import db, outbox, pack, topology
from events.backoff import Backoff, sleep_or_stop
from events.logs import emit
from events.publisher import Publisher, PublishFailed
from shardpay import tracing
from shardpay.config import Settings


@dataclass(frozen=True)
class RelayOptions:
    batch_size: int = 500
    # Seconds before the next claim after a batch that was not full. Events written meanwhile go out together:
    # a pack costs one claim, one publish and confirm, one delivery per queue and one batch per consumer
    # whatever its size, so at 0.05 s the event pipeline cost more CPU per transfer than the gateway did.
    linger: float = 0.2
    prune_every: float = 60.0
    retention: float = 3600.0  # published rows are kept this long for debugging, then pruned


async def run_relay(settings: Settings, stop: asyncio.Event, options: RelayOptions | None = None) -> None:
    """Relay every shard's outbox until ``stop`` is set; a shard or the broker being down only pauses it."""
    opts = options or RelayOptions(linger=settings.relay_linger)
    publisher = Publisher(settings.amqp_url, topology.delays(settings), queue_type=settings.amqp_queue_type)
    pools = [await db.lazy_pool(dsn, settings, max_size=2) for dsn in settings.shard_dsns]
    emit("relay.started", shards=len(pools), batch_size=opts.batch_size)
    relays = [ShardRelay(index, pool, publisher, opts) for index, pool in enumerate(pools)]
    try:
        await _declare_early(publisher)
        await asyncio.gather(*(relay.run(stop) for relay in relays))
    finally:
        # Shielded so that a second Ctrl-C cannot leave connections open behind us.
        await asyncio.shield(_close(publisher, pools))
    emit("relay.stopped", published=sum(relay.published for relay in relays))


MAX_LINKS = 64  # requests a publish span links to (a pack carries up to 500 events)


def _links(rows: list[asyncpg.Record]) -> list[Link]:
    if not tracing.enabled():
        return []
    found = [orjson.loads(row["body"]).get("request_id") for row in rows[:MAX_LINKS]]
    return [tracing.link_to(rid) for rid in found if isinstance(rid, str)]


async def relay_batch(pool: asyncpg.Pool, publisher: Publisher, limit: int) -> int:
    """Publish up to ``limit`` of a shard's oldest unpublished rows and mark them once all are confirmed."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await outbox.claim(conn, limit)
        if rows:
            with tracing.span("relay publish", kind=SpanKind.PRODUCER, links=_links(rows), events=len(rows)):
                message = pack.pack_message(rows)
                tracing.inject(message.headers)
                await publisher.publish([(pack.ROUTING_KEY, message)])
            await outbox.mark_published(conn, [row["seq"] for row in rows])
    return len(rows)


class ShardRelay:
    """The loop for one shard: batches back to back while they come full, else a linger before the next."""

    def __init__(self, shard: int, pool: asyncpg.Pool, publisher: Publisher, options: RelayOptions) -> None:
        self.shard = shard
        self.published = 0
        self._pool = pool
        self._publisher = publisher
        self._options = options
        self._backoff = Backoff()
        self._failing = False
        self._next_prune = time.monotonic() + options.prune_every

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = await self.step()
            if delay > 0 and await sleep_or_stop(stop, delay):
                break

    async def step(self) -> float:
        """One batch (and a prune when due); the pause before the next step."""
        try:
            count = await relay_batch(self._pool, self._publisher, self._options.batch_size)
            await self._maybe_prune()
        except PublishFailed as exc:
            return self._failed("relay.broker_unavailable", exc.reason)
        except db.RETRYABLE as exc:
            return self._failed("relay.shard_unavailable", type(exc).__name__)
        self._recovered()
        self.published += count
        return 0.0 if count == self._options.batch_size else self._options.linger

    async def _maybe_prune(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self._options.prune_every
        pruned = await outbox.prune(self._pool, self._options.retention)
        if pruned:
            emit("relay.pruned", shard=self.shard, rows=pruned)

    def _failed(self, event: str, reason: str) -> float:
        delay = self._backoff.next()
        self._failing = True
        emit(event, shard=self.shard, error=reason, retry_in=round(delay, 3))
        return delay

    def _recovered(self) -> None:
        if self._failing:
            emit("relay.recovered", shard=self.shard)
        self._failing = False
        self._backoff.reset()


async def _declare_early(publisher: Publisher) -> None:
    # The consumers' queues should exist before the first event does; a broker that is down is only logged
    # here, and the shard loops keep trying to reach it.
    try:
        await publisher.open()
    except PublishFailed as exc:
        emit("relay.broker_unavailable", error=exc.reason)


async def _close(publisher: Publisher, pools: list[asyncpg.Pool]) -> None:
    await publisher.close()
    for pool in pools:
        await pool.close()
