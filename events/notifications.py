"""The notifications consumer: each event, signed, to its merchant's webhook URL, at least once.

Idempotent by event id through ``webhook_deliveries``: an event already delivered is acked without a second
POST. A batch costs three queries whatever its size (the merchants' targets, which of their events are final,
the delivery rows); its POSTs go concurrently. A failed POST is parked in a delay queue (exponential backoff
from ``settings.webhook_backoff``), and after the last attempt moved to ``shardpay.notifications.dead``; in
both cases the original is acked only after the broker confirmed the copy.

An event of a merchant with no webhook URL is acked and leaves no row: there is nothing to deliver, so nothing
to make idempotent, and a 'skipped' row per event was a control-database write for every transfer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import asyncpg
import httpx
from aio_pika.abc import AbstractChannel

from events import db, deliveries, retry, topology, webhook
from events.consumer import ConsumerSpec, Incoming, Outcome, run_consumer
from events.deliveries import Delivery
from events.logs import emit
from shardpay.config import Settings

# Several batches at once, so one merchant's slow endpoint (up to the webhook timeout) does not hold up the rest.
NOTIFICATIONS = ConsumerSpec(name="notifications", queue=topology.NOTIFICATIONS, prefetch=16, batches_in_flight=4)
MAX_CONNECTIONS = 128  # concurrent webhook POSTs


@dataclass
class Notifier:
    """The handler for a batch of the notifications queue."""

    control: asyncpg.Pool
    sender: webhook.Sender
    backoff: tuple[float, ...]

    async def __call__(self, batch: Sequence[Incoming], channel: AbstractChannel) -> list[Outcome]:
        targets = await deliveries.targets_of(self.control, (item.event.merchant for item in batch))
        wanted = [item.event.id for item in batch if item.event.merchant in targets]
        final = await deliveries.final_among(self.control, wanted) if wanted else set()
        seen: set[str] = set()
        work: list[Awaitable[Delivery | None]] = []
        for item in batch:
            event = item.event
            if (target := targets.get(event.merchant)) is None:
                work.append(_nothing())
            elif event.id in final or event.id in seen:
                emit("webhook.duplicate", event_id=event.id)
                work.append(_nothing())
            else:
                work.append(self._send(item, target, channel))
            seen.add(event.id)
        done = await asyncio.gather(*work, return_exceptions=True)
        await deliveries.record(self.control, [d for d in done if isinstance(d, Delivery)])
        return [d if isinstance(d, BaseException) else None for d in done]

    async def _send(self, item: Incoming, target: webhook.Target, channel: AbstractChannel) -> Delivery:
        result = await self.sender.post(target, item.body, int(time.time()))
        attempt = retry.attempt_of(item.message)
        if result.ok:
            # Not logged: the deliveries table is the record, and a line per webhook would drown the failures.
            return Delivery(item.event, "delivered", attempt, result)
        delay = retry.delay_after(attempt, self.backoff)
        if delay is None:
            queue = await retry.bury(channel, item.message, item.body, item.event, result)
        else:
            queue = await retry.schedule(channel, item.message, item.body, item.event, delay)
        emit(
            "webhook.failed", event_id=item.event.id, merchant=item.event.merchant, attempt=attempt,
            status=result.status, error=result.error, next=queue,
        )  # fmt: skip
        return Delivery(item.event, "retrying" if delay is not None else "dead", attempt, result)


async def _nothing() -> None:
    return None


async def run_notifications(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver merchant webhooks until ``stop`` is set."""
    spec = dataclasses.replace(NOTIFICATIONS, grace=min(NOTIFICATIONS.grace, settings.webhook_timeout + 2))
    control = await db.lazy_pool(settings.control_dsn, settings, max_size=8)
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=32)
    try:
        async with httpx.AsyncClient(timeout=settings.webhook_timeout, limits=limits) as client:
            sender = webhook.Sender(client, settings.webhook_timeout)
            notifier = Notifier(control, sender, settings.webhook_backoff)
            await run_consumer(settings, spec, notifier, stop)
    finally:
        await asyncio.shield(control.close())
