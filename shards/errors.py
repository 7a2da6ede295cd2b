"""The one tuple of errors that mean "this database is unreachable right now", and the domain error for it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from shardpay.domain.errors import ApiError

T = TypeVar("T")

# Connection refused, dropped mid-query, server shutting down or in recovery, pool acquire timed out.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
    # 55000: "database is not accepting connections" (a shard fenced off for maintenance or a drill),
    # and its child 55P03 lock_not_available: both end with nothing committed, so a retry is safe.
    asyncpg.ObjectNotInPrerequisiteStateError,
    # asyncpg's "cannot switch to state N; another operation is in progress": a connection whose backend the
    # server just terminated (a primary killed or demoted under Patroni, a shard fenced off) handed out before
    # its connection_lost arrived. That one is raised before anything is sent; for asyncpg's other internal
    # errors the outcome is unknown, as after a timeout, and the client's retry with its key replays or redoes it.
    asyncpg.InternalClientError,
)


def shard_unavailable(shard: int) -> ApiError:
    return ApiError.unavailable("shard_unavailable", f"Shard {shard} is unavailable; retry with the same key.")


async def on_shard(shard: int, call: Awaitable[T]) -> T:
    """Await a call to ``shard``, turning "unreachable" into a 503 the client can retry."""
    try:
        return await call
    except TRANSIENT:
        raise shard_unavailable(shard) from None
