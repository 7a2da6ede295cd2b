"""Versioned SQL migrations for the control database and every shard. Re-running applies only what is new."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shardpay.config import Settings
from shardpay.domain.money import CURRENCIES
from shards.router import store_even_map

# Serialises concurrent migrators (two `make run`s, or a test run beside a dev server) on each database.
_LOCK_ID = 0x5A4D_0001


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str


def migrations(kind: str) -> list[Migration]:
    """The SQL files for ``kind`` ("control" or "shard"), in version order."""
    folder = importlib.resources.files("shards") / "migrations" / kind
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def ensure_database(dsn: str) -> None:
    """Create the database named in ``dsn`` if the server does not have it yet."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        name = urlsplit(dsn).path.lstrip("/")
        admin = await asyncpg.connect(_with_database(dsn, "postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # another migrator created it between our two calls
        finally:
            await admin.close()
    else:
        await conn.close()


async def apply(conn: asyncpg.Connection, kind: str) -> list[str]:
    """Apply every not-yet-applied migration of ``kind``, each in its own transaction."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in migrations(kind):
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", migration.version)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def _migrate_one(dsn: str, kind: str) -> list[str]:
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        applied = await apply(conn, kind)
        if kind == "shard":
            await conn.execute("SELECT sp_ensure_system_accounts($1)", sorted(CURRENCIES))
        return applied
    finally:
        await conn.close()


async def migrate(settings: Settings) -> dict[str, list[str]]:
    """Create and migrate the control database and every shard; fill the slot map if it is empty."""
    report = {"control": await _migrate_one(settings.control_dsn, "control")}
    conn = await asyncpg.connect(settings.control_dsn)
    try:
        await store_even_map(conn, settings.shard_count)
    finally:
        await conn.close()
    for index, dsn in enumerate(settings.shard_dsns):
        report[f"shard_{index}"] = await _migrate_one(dsn, "shard")
    return report
