"""The notifications consumer: each event, signed, to its merchant's webhook URL, at least once.

Idempotent by event id through ``webhook_deliveries``: an event already delivered (or skipped) is acked
without a second POST. A failed POST is parked in a delay queue (exponential backoff from
``settings.webhook_backoff``), and after the last attempt moved to ``shardpay.notifications.dead``; in both
cases the original is acked only after the broker confirmed the copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

import asyncpg
import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from events import db, deliveries, envelope, retry, topology, webhook
from events.consumer import ConsumerSpec, run_consumer
from events.deliveries import Delivery
from events.envelope import Event
from events.logs import emit
from shardpay.config import Settings

NOTIFICATIONS = ConsumerSpec(name="notifications", queue=topology.NOTIFICATIONS, prefetch=128)


@dataclass
class Notifier:
    """The handler for one message of the notifications queue."""

    control: asyncpg.Pool
    sender: webhook.Sender
    backoff: tuple[float, ...]

    async def __call__(self, message: AbstractIncomingMessage, channel: AbstractChannel) -> None:
        event = envelope.parse(message.body)
        if await deliveries.is_final(self.control, event.id):
            emit("webhook.duplicate", event_id=event.id)
            return
        target = await deliveries.target_of(self.control, event.merchant)
        if target is None:
            await deliveries.record(self.control, Delivery(event, "skipped", 0, note="no_webhook_url"))
            return
        result = await self.sender.post(target, message.body, int(time.time()))
        if result.ok:
            await self._delivered(message, event, result)
        else:
            await self._failed(message, channel, event, result)

    async def _delivered(self, message: AbstractIncomingMessage, event: Event, result: webhook.Result) -> None:
        # Not logged: the deliveries table is the record, and a line per webhook would drown the failures.
        attempt = retry.attempt_of(message)
        await deliveries.record(self.control, Delivery(event, "delivered", attempt, result))

    async def _failed(
        self, message: AbstractIncomingMessage, channel: AbstractChannel, event: Event, result: webhook.Result
    ) -> None:
        attempt = retry.attempt_of(message)
        delay = retry.delay_after(attempt, self.backoff)
        if delay is None:
            queue = await retry.bury(channel, message, event, result)
            await deliveries.record(self.control, Delivery(event, "dead", attempt, result))
        else:
            queue = await retry.schedule(channel, message, event, delay)
            await deliveries.record(self.control, Delivery(event, "retrying", attempt, result))
        emit(
            "webhook.failed", event_id=event.id, merchant=event.merchant, attempt=attempt,
            status=result.status, error=result.error, next=queue,
        )  # fmt: skip


async def run_notifications(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver merchant webhooks until ``stop`` is set."""
    spec = dataclasses.replace(NOTIFICATIONS, grace=min(NOTIFICATIONS.grace, settings.webhook_timeout + 2))
    control = await db.lazy_pool(settings.control_dsn, settings, max_size=8)
    limits = httpx.Limits(max_connections=spec.prefetch, max_keepalive_connections=32)
    try:
        async with httpx.AsyncClient(timeout=settings.webhook_timeout, limits=limits) as client:
            sender = webhook.Sender(client, settings.webhook_timeout)
            notifier = Notifier(control, sender, settings.webhook_backoff)
            await run_consumer(settings, spec, notifier, stop)
    finally:
        await asyncio.shield(control.close())
