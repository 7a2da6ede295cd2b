"""SQL for the control database and every shard, in two kinds, as Flyway has them.

Versioned migrations (``migrations/<kind>/NNNN_*.sql``) change tables, indexes and data: each is applied once,
in order, and recorded in ``schema_migrations``. Repeatable files (``sql/<kind>/*.sql``) hold every function and
trigger as it is now, one file per concern: whenever any file's text differs from the checksum recorded in
``schema_repeatables``, all of them are applied again in one transaction, after dropping every function of the
database's ``public`` schema (and, by cascade, the triggers that call them), so that a function renamed or
given new parameters leaves no stale overload behind. A reader opens one file to see what runs now.
Re-running applies only what is new or changed.
"""

from __future__ import annotations

import hashlib
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


def _files(*path: str) -> list[Migration]:
    folder = importlib.resources.files("shards").joinpath(*path)
    if not folder.is_dir():
        return []
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def migrations(kind: str) -> list[Migration]:
    """The versioned migrations for ``kind`` ("control" or "shard"), in version order."""
    return _files("migrations", kind)


def repeatables(kind: str) -> list[Migration]:
    """The repeatable files for ``kind``: every function and trigger, as it is now, in name order."""
    return _files("sql", kind)


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


# Every function in public that no extension owns: the repeatable files define all of them.
_OWN_FUNCTIONS = """
SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
"""


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
    """Apply every not-yet-applied migration of ``kind``, each in its own transaction, then the repeatable
    files if any changed; returns what was applied (repeatables as ``sql/<name>``)."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        return [*await _versioned(conn, kind), *await _repeatable(conn, kind)]
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def _versioned(conn: asyncpg.Connection, kind: str) -> list[str]:
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


async def _repeatable(conn: asyncpg.Connection, kind: str) -> list[str]:
    """All repeatable files again, in one transaction, if any file's checksum differs from the recorded one (or
    a file was added or removed); nothing otherwise."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_repeatables "
        "(name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    files = repeatables(kind)
    wanted = {f.version: checksum(f.sql) for f in files}
    recorded = {r["name"]: r["checksum"] for r in await conn.fetch("SELECT name, checksum FROM schema_repeatables")}
    if wanted == recorded:
        return []
    async with conn.transaction():
        # Bodies refer to each other and to functions of later files: check them when they run, not now
        # (as pg_dump's scripts do). Every function is dropped first, so none is left from an older text.
        await conn.execute("SET LOCAL check_function_bodies = off")
        for signature in [r[0] for r in await conn.fetch(_OWN_FUNCTIONS)]:
            await conn.execute(f"DROP FUNCTION IF EXISTS {signature} CASCADE")
        for f in files:
            await conn.execute(f.sql)
        await conn.execute("DELETE FROM schema_repeatables")
        await conn.executemany(
            "INSERT INTO schema_repeatables (name, checksum) VALUES ($1, $2)", sorted(wanted.items())
        )
    return [f"sql/{f.version}" for f in files if recorded.get(f.version) != wanted[f.version]]


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
