"""PostgreSQL helpers shared by the relay and the consumers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shardpay.config import Settings
from shards.errors import TRANSIENT as UNREACHABLE
from shards.pools import create_pool

# Unreachable, plus any server-side error: a long-running worker logs it and tries again after a pause
# rather than dying (an unmigrated database, a statement timeout, a serialization failure).
RETRYABLE: tuple[type[BaseException], ...] = (*UNREACHABLE, asyncpg.PostgresError)

Source = asyncpg.Pool | asyncpg.Connection
Conn = asyncpg.Connection | PoolConnectionProxy


async def lazy_pool(dsn: str, settings: Settings, max_size: int) -> asyncpg.Pool:
    """A pool that connects on first use, so a database that is down does not stop the process starting."""
    return await create_pool(dsn, settings, 0, max_size)


@contextlib.asynccontextmanager
async def connection(source: Source) -> AsyncIterator[Conn]:
    """A pool's connection for the duration of the block, or the given connection itself."""
    if isinstance(source, asyncpg.Connection):
        yield source
        return
    async with source.acquire() as conn:
        yield conn
