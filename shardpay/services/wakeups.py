"""Waking the executors when work is queued, instead of polling every shard many times a second.

Every transaction that queues PSP work notifies ``psp_work`` on its shard (``pg_notify``, delivered at commit).
Each executor listens on every shard with a connection of its own and wakes that shard's loop; it also polls
every ``SHARDPAY_EXECUTOR_POLL`` seconds, for work that becomes due by the clock (a retry's backoff, a 'pending'
recheck, a dead worker's lease) and for anything queued while a listening connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from events.logs import emit
from shards.errors import TRANSIENT

CHANNEL = "psp_work"
RECONNECT = 1.0  # seconds between tries to listen on a shard that went away
_UNREACHABLE: tuple[type[BaseException], ...] = (*TRANSIENT, asyncpg.PostgresError)


class Wakeups:
    def __init__(self, dsns: tuple[str, ...], timeout: float) -> None:
        self._dsns = dsns
        self._timeout = timeout
        self._events = [asyncio.Event() for _ in dsns]

    def wake(self, shard: int) -> None:
        self._events[shard].set()

    def wake_all(self) -> None:
        for event in self._events:
            event.set()

    async def wait(self, shard: int, seconds: float) -> None:
        """Until ``shard`` has news, or ``seconds`` have passed."""
        event = self._events[shard]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._listen(shard, stop) for shard in range(len(self._dsns))))

    async def _listen(self, shard: int, stop: asyncio.Event) -> None:
        event = self._events[shard]

        def notified(*_: Any) -> None:
            event.set()

        while not stop.is_set():
            try:
                conn = await asyncpg.connect(self._dsns[shard], timeout=self._timeout)
            except _UNREACHABLE as exc:
                emit("executor.listen_unavailable", shard=shard, error=type(exc).__name__)
                await _sleep_or_stop(stop, RECONNECT)
                continue
            try:
                await conn.add_listener(CHANNEL, notified)
                event.set()  # anything queued while nobody listened
                await _until_lost(conn, stop)
            except TRANSIENT:
                pass
            finally:
                with contextlib.suppress(*TRANSIENT):
                    await conn.close(timeout=self._timeout)


async def _until_lost(conn: asyncpg.Connection, stop: asyncio.Event) -> None:
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _: lost.set())
    waiters = {asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
