"""Migrations: versioned files change tables once; repeatable files are the functions as they are now, re-applied
whenever their text changes, in one transaction, leaving nothing of an older text behind.

Everything runs on a scratch set of databases (``<test prefix>_migrate_*``) of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from shardpay.config import Settings
from shards import migrate as migrations
from shards.migrate import Migration, migrate
from tests.conftest import TEST_PREFIX, audit_clean, drop_databases, stack_env

# What the layered migrations of earlier versions left in a shard: batch functions that sp_tick replaced.
STALE = [
    "CREATE FUNCTION sp_open_transfers(p_id text[]) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$",
    "CREATE FUNCTION sp_finish_transfers(p_id text[], p_inbound text[]) RETURNS integer LANGUAGE sql AS $$ SELECT 2 $$",
]
OLD_VERSIONS = ["0002_money", "0003_batch", "0004_batch_saga", "0006_set_based_batches", "0009_shard_tick"]


@pytest_asyncio.fixture
async def scratch() -> AsyncIterator[Settings]:
    settings = Settings.from_env(stack_env(SHARDPAY_DB_PREFIX=f"{TEST_PREFIX}_migrate", SHARDPAY_SHARDS="2"))
    await drop_databases(settings)
    yield settings
    await drop_databases(settings)


async def functions(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        )
        return {row[0] for row in rows}
    finally:
        await conn.close()


def defined(kind: str) -> set[str]:
    """The function names the repeatable files of ``kind`` define."""
    names = set()
    for f in migrations.repeatables(kind):
        for part in f.sql.split("CREATE OR REPLACE FUNCTION ")[1:]:
            names.add(part.split("(", 1)[0].strip())
    return names


async def test_a_second_run_applies_nothing(scratch: Settings) -> None:
    first = await migrate(scratch)
    assert any(name.startswith("sql/") for name in first["shard_0"])
    second = await migrate(scratch)
    assert all(applied == [] for applied in second.values()), second


async def test_a_database_from_the_layered_migrations_moves_forward_without_loss(scratch: Settings) -> None:
    await migrate(scratch)
    await _some_money(scratch)
    shard = scratch.shard_dsns[0]
    conn = await asyncpg.connect(shard)
    try:
        # As an older version left it: functions defined by versioned files, no record of repeatable files.
        for sql in STALE:
            await conn.execute(sql)
        await conn.execute("DROP TABLE schema_repeatables")
        await conn.executemany("INSERT INTO schema_migrations (version) VALUES ($1)", [(v,) for v in OLD_VERSIONS])
        before = await conn.fetch("SELECT * FROM ledger_entries ORDER BY id")
    finally:
        await conn.close()

    applied = await migrate(scratch)
    assert applied["shard_0"] == [f"sql/{f.version}" for f in migrations.repeatables("shard")]
    assert applied["shard_1"] == []
    assert await functions(shard) == defined("shard")  # the stale batch functions are gone
    conn = await asyncpg.connect(shard)
    try:
        assert await conn.fetch("SELECT * FROM ledger_entries ORDER BY id") == before
        with pytest.raises(asyncpg.RestrictViolationError):  # the immutability triggers are back
            await conn.execute("DELETE FROM ledger_entries")
    finally:
        await conn.close()
    await audit_clean(scratch)


async def test_a_changed_file_is_applied_again_and_a_broken_one_changes_nothing(
    scratch: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate(scratch)
    real = migrations.repeatables("shard")
    changed = [Migration(f.version, f.sql + "\n-- edited\n") if f.version == "saga" else f for f in real]
    monkeypatch.setattr(migrations, "repeatables", lambda kind: changed if kind == "shard" else [])
    applied = await migrate(scratch)
    assert applied["shard_0"] == ["sql/saga"] and applied["shard_1"] == ["sql/saga"]
    assert await functions(scratch.shard_dsns[0]) == defined("shard")

    broken = [*changed, Migration("zz_broken", "CREATE FUNCTION sp_broken() RETURNS int LANGUAGE sql AS $$ $$; x")]
    monkeypatch.setattr(migrations, "repeatables", lambda kind: broken if kind == "shard" else [])
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate(scratch)
    # All or nothing: every function is still there, and the recorded checksums are those of the last good run.
    assert await functions(scratch.shard_dsns[0]) == defined("shard")
    monkeypatch.setattr(migrations, "repeatables", lambda kind: changed if kind == "shard" else [])
    assert (await migrate(scratch))["shard_0"] == []


async def _some_money(settings: Settings) -> None:
    """A wallet with a credit on shard 0, so there are entries whose survival can be checked."""
    conn = await asyncpg.connect(settings.shard_dsns[0])
    try:
        await conn.execute(
            "INSERT INTO accounts (id, merchant_id, kind, currency) VALUES ('wal_0000aaaaaaaaaaaaaaaaaaaa', "
            "'mer_000000000000000000000000', 'wallet', 'USD')"
        )
        await conn.execute(
            "SELECT sp_credit_wallet('operator', 'k', 'fp', 'wal_0000aaaaaaaaaaaaaaaaaaaa', 500, 'adj_test', 'test', "
            "'{}', 'evt_t', '{}')"
        )
    finally:
        await conn.close()
