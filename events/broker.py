"""Connecting to RabbitMQ, and the one tuple of errors that mean "the broker is unreachable right now"."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import aio_pika
import aiormq.exceptions
import pamqp.exceptions
from aio_pika.abc import AbstractConnection, DeliveryMode, HeadersType

CONNECT_TIMEOUT = 5.0

# Refused or dropped connections, closed channels (a RuntimeError subclass in aiormq), nacked or returned
# publications, and protocol faults. A lost confirm is among them: the caller retries, which may duplicate.
TRANSIENT: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,
    pamqp.exceptions.PAMQPException,
)


async def connect(url: str) -> AbstractConnection:
    """A plain connection: the callers own reconnection, so no state is silently restored behind them."""
    return await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)


async def close_quietly(connection: AbstractConnection) -> None:
    # Closing a connection the broker already dropped raises; there is nothing left to clean up then.
    with contextlib.suppress(*TRANSIENT):
        await connection.close()


def event_message(
    body: bytes, event_id: str, event_type: str, headers: Mapping[str, object], expiration: float | None = None
) -> aio_pika.Message:
    """A persistent JSON message carrying one event; ``message_id`` is the event id."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=event_id,
        type=event_type,
        headers=_headers(headers),
        expiration=expiration,
        app_id="shardpay",
    )


def _headers(headers: Mapping[str, object]) -> HeadersType:
    return {key: value for key, value in headers.items() if value is not None}  # type: ignore[misc]
