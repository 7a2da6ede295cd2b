"""The file's lines staged on the shards of the objects they name, then compared there, set-wise.

Each shard gets one connection of the run's own, which holds its temporary tables (``shards.reconcile``), and a
buffer of at most ``CHUNK`` lines, sent by COPY whenever it fills: memory stays flat however long the file is.
A line whose reference is no well-formed id of ours names nothing on any shard; it is staged on shard 0, where
it finds no record and comes out as an unknown reference like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

import asyncpg

from shardpay import ids
from shardpay.config import Settings
from shardpay.domain.settlement import Line
from shards import reconcile
from shards.router import SlotMap

T = TypeVar("T")
CHUNK = 5000
_PREFIXES = {"charge": "po", "refund": "re", "payout": "out"}
APPLICATION_NAME = "shardpay-reconcile"


def bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC day as [start, end)."""
    start = datetime.combine(day, time(0), UTC)
    return start, start + timedelta(days=1)


# No JIT: the comparison's cost estimate makes PostgreSQL compile it, which took 2.7 s of the 3.1 s it spent on
# a shard of 25,000 lines (EXPLAIN ANALYZE), for a statement that runs once.
SERVER_SETTINGS = {"application_name": APPLICATION_NAME, "jit": "off"}


async def connect(dsn: str, settings: Settings) -> asyncpg.Connection:
    # No statement timeout: a day's comparison is one statement over every line of a shard.
    return await asyncpg.connect(dsn, timeout=settings.db_timeout, server_settings=SERVER_SETTINGS)


@contextlib.asynccontextmanager
async def connections(settings: Settings) -> AsyncIterator[list[asyncpg.Connection]]:
    """One connection per shard, closed (and their temporary tables with them) whatever happens."""
    opened: list[asyncpg.Connection] = []
    try:
        for dsn in settings.shard_dsns:
            opened.append(await connect(dsn, settings))
        yield opened
    finally:
        for conn in opened:
            # Shielded: a cancelled run must still close what it opened, or its backend lingers.
            await asyncio.shield(conn.close())


class Staging:
    """Lines in, per shard; then the comparison on every shard at once."""

    def __init__(self, conns: list[asyncpg.Connection], slots: SlotMap) -> None:
        self.conns = conns
        self.slots = slots
        self.buffers: list[list[tuple[object, ...]]] = [[] for _ in conns]
        self.lines = 0

    async def open(self) -> None:
        await self.each(lambda shard, conn: reconcile.open_staging(conn))

    def shard_of(self, line: Line) -> int:
        slot = ids.parse(line.reference, _PREFIXES[line.type])
        return 0 if slot is None else self.slots.shard_of(slot)

    async def add(self, line: Line) -> None:
        shard = self.shard_of(line)
        buffer = self.buffers[shard]
        buffer.append(line.record())
        self.lines += 1
        if len(buffer) >= CHUNK:
            await self._flush(shard)

    async def _flush(self, shard: int) -> None:
        if self.buffers[shard]:
            await reconcile.stage(self.conns[shard], self.buffers[shard])
            self.buffers[shard] = []

    async def compare(self, day: date) -> None:
        """Send what is buffered, then compare on every shard at once."""
        start, end = bounds(day)

        async def one(shard: int, conn: asyncpg.Connection) -> None:
            await self._flush(shard)
            await reconcile.compare(conn, day, start, end)

        await self.each(one)

    async def each(self, work: Callable[[int, asyncpg.Connection], Awaitable[T]]) -> list[T]:
        """``work`` on every shard's connection at once."""
        return list(await asyncio.gather(*(work(shard, conn) for shard, conn in enumerate(self.conns))))
