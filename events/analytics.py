"""The analytics consumer: money volume and count per merchant, currency and minute.

A batch of events is counted in one control-database transaction that also records their ids in
``analytics_processed``, so a redelivered event changes nothing. The batch's movements are summed per
bucket first: one row update per merchant, currency and minute, not per event (the minute row of a busy
merchant is the hottest row in the system).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel

from events import db, topology
from events.backoff import sleep_or_stop
from events.consumer import ConsumerSpec, Incoming, Outcome, run_consumer
from events.envelope import InvalidEvent
from events.logs import emit
from events.volume import Movement, movement_of
from shardpay.config import Settings

ANALYTICS = ConsumerSpec(name="analytics", queue=topology.ANALYTICS, prefetch=16)
# Far longer than any redelivery can lag (seconds to hours), so forgetting older ids never double-counts.
PROCESSED_RETENTION_DAYS = 30
PRUNE_EVERY = 3600.0

_FIRST_SEEN = """
INSERT INTO analytics_processed (event_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING event_id
"""
_ADD = """
INSERT INTO analytics_minute AS a (merchant_id, currency, minute, volume, count)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bigint[])
ON CONFLICT (merchant_id, currency, minute)
DO UPDATE SET volume = a.volume + EXCLUDED.volume, count = a.count + EXCLUDED.count
"""
_QUERY = """
SELECT minute, currency, volume, count FROM analytics_minute
WHERE merchant_id = $1 AND ($2::text IS NULL OR currency = $2) AND minute >= $3 AND minute < $4
ORDER BY minute, currency
"""


async def apply(source: db.Source, event_id: str, movement: Movement) -> bool:
    """Count one money event, once: False (and nothing changed) if ``event_id`` was counted before."""
    return await apply_many(source, [(event_id, movement)]) == 1


async def apply_many(source: db.Source, movements: Sequence[tuple[str, Movement]]) -> int:
    """Count each money event not counted before, in one transaction; returns how many were new."""
    async with db.connection(source) as conn, conn.transaction():
        fresh = {row["event_id"] for row in await conn.fetch(_FIRST_SEEN, [event_id for event_id, _ in movements])}
        buckets: dict[tuple[str, str, datetime], list[int]] = {}
        for event_id, m in movements:
            if event_id in fresh:
                fresh.discard(event_id)  # an id twice in one batch counts once
                bucket = buckets.setdefault((m.merchant, m.currency, m.minute), [0, 0])
                bucket[0] += m.amount
                bucket[1] += 1
        # In key order, so two analytics consumers updating the same buckets can never deadlock.
        keys = sorted(buckets)
        if keys:
            await conn.execute(
                _ADD, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                [buckets[k][0] for k in keys], [buckets[k][1] for k in keys],
            )  # fmt: skip
    return sum(count for _, count in buckets.values())


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
    """The handler for a batch of the analytics queue; events that move no money are acked untouched."""

    control: asyncpg.Pool

    async def __call__(self, batch: Sequence[Incoming], channel: AbstractChannel) -> list[Outcome]:
        outcomes: list[Outcome] = []
        movements: list[tuple[str, Movement]] = []
        for item in batch:
            try:
                movement = movement_of(item.event)
            except InvalidEvent as exc:
                outcomes.append(exc)
                continue
            outcomes.append(None)
            if movement is not None:
                movements.append((item.event.id, movement))
        if movements:
            await apply_many(self.control, movements)
        return outcomes


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
