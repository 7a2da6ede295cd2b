"""Exchange and queue names, and their idempotent declaration (every process declares at start-up).

Webhook retries wait in one delay queue per backoff step: a queue-wide ``x-message-ttl`` keeps each queue
first-in first-out, so no message ever waits behind a longer-lived one; on expiry the broker dead-letters
the message straight back to the notifications queue through the default exchange.
"""

from __future__ import annotations

from collections.abc import Iterable

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.common import FieldTable

EXCHANGE = "shardpay.events"
NOTIFICATIONS = "shardpay.notifications"
ANALYTICS = "shardpay.analytics"
CONSUMED = (NOTIFICATIONS, ANALYTICS)


def dead_queue(queue: str) -> str:
    """Where ``queue``'s messages go when rejected for good (or, for webhooks, after the last attempt)."""
    return f"{queue}.dead"


def delay_queue(seconds: float) -> str:
    return f"{NOTIFICATIONS}.delay.{_ms(seconds)}"


def queue_names(backoff: Iterable[float]) -> list[str]:
    """Every queue ``declare`` creates, for operators and tests."""
    delays = [delay_queue(s) for s in sorted(set(backoff))]
    return [*CONSUMED, *(dead_queue(q) for q in CONSUMED), *delays]


async def declare(channel: AbstractChannel, backoff: Iterable[float]) -> AbstractExchange:
    """Declare the exchange and every queue; safe to repeat with the same settings."""
    exchange = await channel.declare_exchange(EXCHANGE, ExchangeType.TOPIC, durable=True)
    for name in CONSUMED:
        await channel.declare_queue(dead_queue(name), durable=True)
        queue = await channel.declare_queue(name, durable=True, arguments=_dead_letter(dead_queue(name)))
        await queue.bind(exchange, "#")
    for seconds in sorted(set(backoff)):
        arguments: FieldTable = {"x-message-ttl": _ms(seconds), **_dead_letter(NOTIFICATIONS)}
        await channel.declare_queue(delay_queue(seconds), durable=True, arguments=arguments)
    return exchange


def _dead_letter(to_queue: str) -> FieldTable:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": to_queue}


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
