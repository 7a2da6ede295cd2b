"""Webhook retries: which attempt a message is on, and where a failed one goes next.

Attempt n (1-based) is the n-th POST. After a failed attempt n <= len(backoff) the message waits
``backoff[n-1]`` seconds in that step's delay queue; after the last one it goes to the dead-letter queue.
An event deferred because its merchant had no free slot (``defer``) was not POSTed: it keeps its attempt.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from events import broker, pack, topology
from events.envelope import Event
from events.webhook import Result

ATTEMPT_HEADER = "x-attempt"
# Each retry waits between 80 % and 100 % of its step: merchants recovering from an outage are not hit by
# every retry at once. Never more than 100 %: the queue's own TTL is the ceiling (and FIFO keeps it so).
JITTER = 0.2


def attempt_of(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(ATTEMPT_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def delay_after(attempt: int, backoff: Sequence[float]) -> float | None:
    """The wait before attempt ``attempt + 1``, or None when ``attempt`` was the last."""
    return backoff[attempt - 1] if attempt <= len(backoff) else None


async def schedule(
    channel: AbstractChannel, message: AbstractIncomingMessage, body: bytes, event: Event, delay: float
) -> str:
    """Park the event (``body``, from ``message``) in the delay queue for ``delay``, as its next attempt;
    returns once confirmed."""
    return await _park(channel, message, body, event, delay, attempt_of(message) + 1)


async def defer(
    channel: AbstractChannel, message: AbstractIncomingMessage, body: bytes, event: Event, delay: float
) -> str:
    """Park the event for ``delay`` without spending an attempt (it was never POSTed); returns once confirmed."""
    return await _park(channel, message, body, event, delay, attempt_of(message))


async def _park(
    channel: AbstractChannel, message: AbstractIncomingMessage, body: bytes, event: Event, delay: float, attempt: int
) -> str:
    queue = topology.delay_queue(delay)
    expiration = delay * random.uniform(1 - JITTER, 1.0)
    await _publish(channel, queue, _copy(message, body, event, {ATTEMPT_HEADER: attempt}, expiration))
    return queue


async def bury(
    channel: AbstractChannel, message: AbstractIncomingMessage, body: bytes, event: Event, result: Result
) -> str:
    """Move the event to the notifications dead-letter queue; returns once the broker confirmed it."""
    queue = topology.dead_queue(topology.NOTIFICATIONS)
    headers = {ATTEMPT_HEADER: attempt_of(message), "x-last-status": result.status, "x-last-error": result.error}
    await _publish(channel, queue, _copy(message, body, event, headers, None))
    return queue


async def _publish(channel: AbstractChannel, queue: str, message: aio_pika.Message) -> None:
    # The channel has confirms on and raises on returns, so an unroutable message is an error, not a loss.
    await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)


def _copy(
    message: AbstractIncomingMessage, body: bytes, event: Event, extra: Mapping[str, object], expiration: float | None
) -> aio_pika.Message:
    """A single-event message: the event's own bytes, whether it came alone or in a pack."""
    if message.type == pack.PACK_TYPE:
        kept: dict[str, object] = {"merchant": event.merchant}
    else:
        # The broker's own x- headers (x-death grows with every pass through a delay queue) are not carried over.
        kept = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
    return broker.event_message(body, event.id, event.type, {**kept, **extra}, expiration)
