"""Exchange and queue names, and their idempotent declaration (every process declares at start-up).

Webhook retries wait in one delay queue per backoff step, and an event whose merchant had no free slot waits
in the deferral's (one webhook timeout): a queue-wide ``x-message-ttl`` keeps each queue first-in first-out,
so no message ever waits behind a longer-lived one; on expiry the broker dead-letters the message straight
back to the notifications queue through the default exchange.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.common import FieldTable

from shardpay.config import Settings

EXCHANGE = "shardpay.events"
NOTIFICATIONS = "shardpay.notifications"
ANALYTICS = "shardpay.analytics"
CONSUMED = (NOTIFICATIONS, ANALYTICS)


def dead_queue(queue: str) -> str:
    """Where ``queue``'s messages go when rejected for good (or, for webhooks, after the last attempt)."""
    return f"{queue}.dead"


def delay_queue(seconds: float) -> str:
    return f"{NOTIFICATIONS}.delay.{_ms(seconds)}"


def deferral(webhook_timeout: float) -> float:
    """How long an event whose merchant was at its cap waits before it is tried again: one webhook timeout, by
    when every POST holding one of that merchant's slots has ended (and no less than a second)."""
    return max(1.0, webhook_timeout)


def delays(settings: Settings) -> list[float]:
    """Every delay queue's wait: the backoff steps and the deferral."""
    return sorted({*settings.webhook_backoff, deferral(settings.webhook_timeout)})


def queue_names(delays: Iterable[float]) -> list[str]:
    """Every queue ``declare`` creates, for operators and tests."""
    waits = [delay_queue(s) for s in sorted(set(delays))]
    return [*CONSUMED, *(dead_queue(q) for q in CONSUMED), *waits]


def queue_arguments(delays: Iterable[float]) -> dict[str, FieldTable]:
    """Every queue ``declare`` creates, with its arguments (before its type's: ``events.queue_types``)."""
    found: dict[str, FieldTable] = {}
    for name in CONSUMED:
        found[dead_queue(name)] = {}
        found[name] = _dead_letter(dead_queue(name))
    for seconds in sorted(set(delays)):
        found[delay_queue(seconds)] = {"x-message-ttl": _ms(seconds), **_dead_letter(NOTIFICATIONS)}
    return found


async def declare(
    channel: AbstractChannel, delays: Iterable[float], types: Mapping[str, str] | None = None
) -> AbstractExchange:
    """Declare the exchange and every queue (a delay queue per wait in ``delays``, see ``delays()``), each of
    the type ``types`` names (``events.queue_types.resolve``; classic if absent); safe to repeat."""
    exchange = await channel.declare_exchange(EXCHANGE, ExchangeType.TOPIC, durable=True)
    for name, arguments in queue_arguments(delays).items():
        kind = (types or {}).get(name, "classic")
        queue = await channel.declare_queue(name, durable=True, arguments=typed(arguments, kind))
        if name in CONSUMED:
            await queue.bind(exchange, "#")
    return exchange


def typed(arguments: FieldTable, kind: str) -> FieldTable:
    """A queue's arguments for its type. A quorum queue dead-letters at least once (the message leaves only once
    its target confirmed it), which needs the queue to refuse publishes when full rather than drop its head."""
    if kind != "quorum":
        return arguments
    extra: FieldTable = {"x-queue-type": "quorum"}
    if "x-dead-letter-exchange" in arguments:
        extra = {**extra, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return {**arguments, **extra}


def _dead_letter(to_queue: str) -> FieldTable:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": to_queue}


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
