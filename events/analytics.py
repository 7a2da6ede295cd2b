"""The analytics consumer: money volume and count per merchant, currency and minute.

Each event is counted in one control-database transaction that also records its id in
``analytics_processed``, so a redelivered event changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from events import db, envelope, topology
from events.backoff import sleep_or_stop
from events.consumer import ConsumerSpec, run_consumer
from events.logs import emit
from events.volume import Movement, movement_of
from shardpay.config import Settings

ANALYTICS = ConsumerSpec(name="analytics", queue=topology.ANALYTICS, prefetch=256)
# Far longer than any redelivery can lag (seconds to hours), so forgetting older ids never double-counts.
PROCESSED_RETENTION_DAYS = 30
PRUNE_EVERY = 3600.0

_ADD = """
INSERT INTO analytics_minute AS a (merchant_id, currency, minute, volume, count) VALUES ($1, $2, $3, $4, 1)
ON CONFLICT (merchant_id, currency, minute) DO UPDATE SET volume = a.volume + EXCLUDED.volume, count = a.count + 1
"""
_QUERY = """
SELECT minute, currency, volume, count FROM analytics_minute
WHERE merchant_id = $1 AND ($2::text IS NULL OR currency = $2) AND minute >= $3 AND minute < $4
ORDER BY minute, currency
"""


async def apply(source: db.Source, event_id: str, movement: Movement) -> bool:
    """Count one money event, once: False (and nothing changed) if ``event_id`` was counted before."""
    async with db.connection(source) as conn, conn.transaction():
        first = await conn.fetchval(
            "INSERT INTO analytics_processed (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", event_id
        )
        if first:
            await conn.execute(_ADD, movement.merchant, movement.currency, movement.minute, movement.amount)
    return bool(first)


async def query(
    source: db.Source, merchant_id: str, currency: str | None, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """Per-minute buckets in [since, until), oldest first: ``{"minute": unix, "currency", "volume", "count"}``."""
    rows = await source.fetch(_QUERY, merchant_id, currency, since, until)
    return [
        {"minute": int(r["minute"].timestamp()), "currency": r["currency"], "volume": r["volume"], "count": r["count"]}
        for r in rows
    ]


@dataclass
class Counter:
    """The handler for one message of the analytics queue; events that move no money are acked untouched."""

    control: asyncpg.Pool

    async def __call__(self, message: AbstractIncomingMessage, channel: AbstractChannel) -> None:
        event = envelope.parse(message.body)
        movement = movement_of(event)
        if movement is not None:
            await apply(self.control, event.id, movement)


async def run_analytics(settings: Settings, stop: asyncio.Event) -> None:
    """Count money events until ``stop`` is set."""
    control = await db.lazy_pool(settings.control_dsn, settings, max_size=8)
    pruner = asyncio.ensure_future(_prune_processed(control, stop))
    try:
        await run_consumer(settings, ANALYTICS, Counter(control), stop)
    finally:
        pruner.cancel()
        await asyncio.gather(pruner, return_exceptions=True)
        await asyncio.shield(control.close())


async def _prune_processed(control: asyncpg.Pool, stop: asyncio.Event) -> None:
    while not await sleep_or_stop(stop, PRUNE_EVERY):
        with contextlib.suppress(*db.RETRYABLE):
            status = await control.execute(
                "DELETE FROM analytics_processed WHERE processed_at < now() - make_interval(days => $1)",
                PROCESSED_RETENTION_DAYS,
            )
            if (rows := int(status.split()[-1])) > 0:
                emit("analytics.pruned", rows=rows)
