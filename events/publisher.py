"""The relay's side of the broker: one connection and one confirm channel, opened on first use and again
after any failure, so a broker restart costs one failed batch and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from events import broker, queue_types, topology

PUBLISH_TIMEOUT = 15.0


class PublishFailed(Exception):
    """Some message of a batch has no confirm: the broker is down, nacked it, or returned it unroutable."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.reason = type(cause).__name__


class Publisher:
    """Publishes batches with publisher confirms, ``mandatory=True``, and returned messages raised as errors."""

    def __init__(
        self, url: str, delays: Iterable[float], timeout: float = PUBLISH_TIMEOUT, queue_type: str = "auto"
    ) -> None:
        """``delays``: the delay queues to declare with the topology (``topology.delays``); ``queue_type``:
        ``SHARDPAY_AMQP_QUEUE_TYPE`` (``events.queue_types``)."""
        self._url = url
        self._delays = tuple(delays)
        self._queue_type = queue_type
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def open(self) -> None:
        """Connect and declare the topology now rather than at the first batch; PublishFailed if it cannot."""
        await self._ready()

    async def publish(self, messages: Sequence[tuple[str, aio_pika.Message]]) -> None:
        """Return once the broker confirmed every (routing key, message); raise PublishFailed otherwise."""
        channel, exchange = await self._ready()
        try:
            await asyncio.wait_for(_publish_all(exchange, messages), self._timeout)
        except broker.TRANSIENT as exc:
            await self._drop(channel)
            raise PublishFailed(exc) from exc

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _ready(self) -> tuple[AbstractChannel, AbstractExchange]:
        try:
            return await self._open()
        except broker.TRANSIENT as exc:
            raise PublishFailed(exc) from exc

    async def _open(self) -> tuple[AbstractChannel, AbstractExchange]:
        async with self._lock:
            if self._channel is None or self._exchange is None or self._channel.is_closed:
                await self._close()
                await self._connect()
            assert self._channel is not None and self._exchange is not None
            return self._channel, self._exchange

    async def _connect(self) -> None:
        connection = await broker.connect(self._url)
        try:
            types = await queue_types.resolve(connection, self._delays, self._queue_type)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange = await topology.declare(channel, self._delays, types)
        except BaseException:
            await broker.close_quietly(connection)
            raise
        self._connection, self._channel = connection, channel

    async def _drop(self, failed: AbstractChannel) -> None:
        # Reconnect (and re-declare the topology) before the next batch; a channel that another batch has
        # already replaced is left alone, so two failing batches do not close each other's new connection.
        async with self._lock:
            if self._channel is failed:
                await self._close()

    async def _close(self) -> None:
        connection, self._connection, self._channel, self._exchange = self._connection, None, None, None
        if connection is not None:
            await broker.close_quietly(connection)


async def _publish_all(exchange: AbstractExchange, messages: Sequence[tuple[str, aio_pika.Message]]) -> None:
    results = await asyncio.gather(
        *(exchange.publish(message, routing_key, mandatory=True) for routing_key, message in messages),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
