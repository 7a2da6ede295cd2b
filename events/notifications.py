"""The notifications consumer: each event, signed, to its merchant's webhook URL, at least once.

Idempotent by event id through ``webhook_deliveries``: an event already delivered is acked without a second
POST. A batch costs three queries whatever its size (the merchants' targets, which of their events are final,
the delivery rows); its POSTs go concurrently. A failed POST is parked in a delay queue (exponential backoff
from ``settings.webhook_backoff``), and after the last attempt moved to ``shardpay.notifications.dead``; in
both cases the original is acked only after the broker confirmed the copy.

Merchants are isolated (``events.lanes``): each has its own connection pool and at most
``settings.webhook_concurrency`` POSTs at once. An event whose merchant has no slot free within ``SLOT_WAIT``
is deferred: parked in the deferral's delay queue (one webhook timeout) with its attempt unchanged, acked once
the broker confirmed the copy, like a retry. So a merchant whose endpoint hangs holds a few of the consumer's
messages for at most the webhook timeout, and everybody else's events, in the same batch or the next ones, go
on time. Connections go only to allowed addresses (``events.egress``, ``events.addresses``).

An event of a merchant with no webhook URL is acked and leaves no row: there is nothing to deliver, so nothing
to make idempotent, and a 'skipped' row per event was a control-database write for every transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field

import asyncpg
from aio_pika.abc import AbstractChannel

from events import db, deliveries, egress, retry, topology, webhook
from events.consumer import ConsumerSpec, Incoming, Outcome, run_consumer
from events.deliveries import Delivery
from events.lanes import Lanes
from events.logs import emit
from shardpay.config import Settings

# As many batches in flight as messages prefetched: a message never waits for a batch that another one holds
# while one of its POSTs runs to the timeout. The window is wide enough that the few messages a hung merchant
# holds (events.lanes) leave most of it to everybody else.
NOTIFICATIONS = ConsumerSpec(name="notifications", queue=topology.NOTIFICATIONS, prefetch=64, batches_in_flight=64)
# Seconds an event waits for a slot of its merchant before it is deferred. A healthy endpoint answers in well
# under a second, so a burst above a merchant's cap mostly waits here rather than taking a trip through the
# delay queue; a merchant that is not keeping up costs each of its waiting events' messages at most this long.
SLOT_WAIT = 1.0
REPORT_EVERY = 10.0  # seconds between two "webhook.deferred" lines for a merchant


@dataclass
class Notifier:
    """The handler for a batch of the notifications queue."""

    control: asyncpg.Pool
    lanes: Lanes
    sender: webhook.Sender
    backoff: tuple[float, ...]
    deferral: float  # seconds a deferred event waits (topology.deferral)
    deferred: Deferrals = field(default_factory=lambda: Deferrals())

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

    async def _send(self, item: Incoming, target: webhook.Target, channel: AbstractChannel) -> Delivery | None:
        async with self.lanes.slot(item.event.merchant, SLOT_WAIT) as client:
            if client is None:
                await retry.defer(channel, item.message, item.body, item.event, self.deferral)
                self.deferred.add(item.event.merchant)
                return None  # not an attempt: no row, and the same attempt number next time
            result = await self.sender.post(client, target, item.body, int(time.time()))
        return await self._settle(item, result, channel)

    async def _settle(self, item: Incoming, result: webhook.Result, channel: AbstractChannel) -> Delivery:
        attempt = retry.attempt_of(item.message)
        if result.ok:
            # Not logged: the deliveries table is the record, and a line per webhook would drown the failures.
            return Delivery(item.event, "delivered", attempt, result)
        delay = retry.delay_after(attempt, self.backoff)
        if delay is None:
            queue = await retry.bury(channel, item.message, item.body, item.event, result)
        else:
            queue = await retry.schedule(channel, item.message, item.body, item.event, delay)
        refused = {"detail": result.detail} if result.detail else {}  # which addresses, and why
        emit(
            "webhook.failed", event_id=item.event.id, merchant=item.event.merchant, attempt=attempt,
            status=result.status, error=result.error, next=queue, **refused,
        )  # fmt: skip
        return Delivery(item.event, "retrying" if delay is not None else "dead", attempt, result)


class Deferrals:
    """Deferred events per merchant, one log line per merchant: at the first, then every ``REPORT_EVERY`` s."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._due = 0.0

    def add(self, merchant: str) -> None:
        self._counts[merchant] += 1
        if time.monotonic() >= self._due:
            self.flush()

    def flush(self) -> None:
        for merchant, count in self._counts.items():
            emit("webhook.deferred", merchant=merchant, count=count, reason="no free slot")
        self._counts.clear()
        self._due = time.monotonic() + REPORT_EVERY


async def _nothing() -> None:
    return None


@contextlib.asynccontextmanager
async def open_notifier(settings: Settings, control: asyncpg.Pool) -> AsyncIterator[Notifier]:
    """A notifier with a lane per merchant, every lane closed on exit."""
    tls = egress.tls_context()
    allow, timeout = settings.webhook_allow_private, settings.webhook_timeout
    lanes = Lanes(settings.webhook_concurrency, lambda cap: egress.open_client(allow, cap, timeout, tls))
    sender = webhook.Sender(timeout)
    notifier = Notifier(control, lanes, sender, settings.webhook_backoff, topology.deferral(timeout))
    try:
        yield notifier
    finally:
        notifier.deferred.flush()
        await asyncio.shield(lanes.aclose())


async def run_notifications(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver merchant webhooks until ``stop`` is set."""
    grace = min(NOTIFICATIONS.grace, SLOT_WAIT + settings.webhook_timeout + 2)
    spec = dataclasses.replace(NOTIFICATIONS, grace=grace)
    control = await db.lazy_pool(settings.control_dsn, settings, max_size=8)
    try:
        async with open_notifier(settings, control) as notifier:
            await run_consumer(settings, spec, notifier, stop)
    finally:
        await asyncio.shield(control.close())
