"""The simulator's database: versioned migrations applied once each, at start-up or by ``migrate``."""

from __future__ import annotations

import importlib.resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shards.errors import TRANSIENT
from shards.migrate import ensure_database

# A connection of the pool or one of its own (asyncpg's stubs type the two apart).
Conn = asyncpg.Connection | PoolConnectionProxy

# "The database is unreachable right now": shardpay's tuple, plus the state error asyncpg raises when a backend
# the server just terminated is handed out before its connection_lost arrives (seen with ALLOW_CONNECTIONS off).
# Nothing can have committed on such a connection, so a 503 (retry with the same key) is the truthful answer.
UNREACHABLE: tuple[type[BaseException], ...] = (*TRANSIENT, asyncpg.InternalClientError)

# Serialises two simulators (or a test beside a dev server) migrating one database at once.
_LOCK_ID = 0x5053_0001


def _migrations() -> list[tuple[str, str]]:
    folder = importlib.resources.files("pspsim").joinpath("migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(dsn: str) -> list[str]:
    """Create the database if needed and apply every migration not yet applied; returns their versions."""
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            return await _apply(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    applied = []
    for version, sql in _migrations():
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        applied.append(version)
    return applied


async def open_pool(dsn: str, connect_timeout: float) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=20, timeout=connect_timeout)
    assert pool is not None  # create_pool returns None only when awaited without a running loop
    return pool
