"""The gateway's view of RabbitMQ, for /readyz only: nothing on the request path publishes (the outbox relay does),
so the gateway starts and serves without a broker and connects in the background."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import aiormq.exceptions

_UNREACHABLE = (OSError, TimeoutError, aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError)


class BrokerProbe:
    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._never = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        while True:
            try:
                self._connection = await aio_pika.connect_robust(self._url, timeout=self._timeout)
                return
            except _UNREACHABLE:
                await asyncio.sleep(1.0)

    @property
    def connected(self) -> asyncio.Event:
        """Set while the broker is reachable (a robust connection clears it while it reconnects)."""
        if self._connection is None:
            return self._never
        event: asyncio.Event = self._connection.connected
        return event

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close()
