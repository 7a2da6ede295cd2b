"""Reconciliation runs in the control database: one row per completed run and its records that did not match
(``reconcile_runs``, ``reconcile_items``), what changed since the previous run of the same day, and the last run
for /metrics.

A run is written in one transaction that also holds its day's advisory lock from before the first line is staged
until the run is stored, so two runs of one day never overlap: the second starts from what the first fixed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from shards.reconcile import ITEM_COLUMNS

# Advisory lock keys: this namespace plus the day's ordinal, one lock per day.
_LOCK_NAMESPACE = 0x5245_434F_0000_0000

_CHANGES = """
SELECT coalesce(a.reference, b.reference) AS reference, coalesce(a.type, b.type) AS type,
       coalesce(b.category, 'matched') AS was, coalesce(b.fixed, false) AS was_fixed,
       coalesce(a.category, 'matched') AS now, coalesce(a.fixed, false) AS now_fixed
FROM (SELECT * FROM reconcile_items WHERE run_id = $1) a
FULL JOIN (SELECT * FROM reconcile_items WHERE run_id = $2) b ON a.reference = b.reference AND a.type = b.type
WHERE coalesce(a.category, 'matched') <> coalesce(b.category, 'matched')
ORDER BY 1, 2
"""


async def lock_day(conn: asyncpg.Connection, day: date) -> None:
    """Wait for, then hold until the end of the caller's transaction, the day's lock."""
    await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", _LOCK_NAMESPACE + day.toordinal())


async def daily_done(conn: asyncpg.Connection, day: date) -> bool:
    """Whether the scheduler's run of ``day`` is stored."""
    found = await conn.fetchval("SELECT 1 FROM reconcile_runs WHERE day = $1 AND trigger = 'daily' LIMIT 1", day)
    return found is not None


async def start(conn: asyncpg.Connection, day: date, trigger: str, source: str, started: datetime) -> int:
    run_id: int = await conn.fetchval(
        "INSERT INTO reconcile_runs (day, trigger, source, started_at) VALUES ($1, $2, $3, $4) RETURNING id",
        day, trigger, source, started,
    )  # fmt: skip
    return run_id


async def copy_items(conn: asyncpg.Connection, run_id: int, shard: int, rows: Sequence[asyncpg.Record]) -> None:
    records = [(run_id, shard, *row) for row in rows]
    await conn.copy_records_to_table("reconcile_items", records=records, columns=("run_id", "shard", *ITEM_COLUMNS))


@dataclass(frozen=True)
class Summary:
    """A run's figures, as stored in its row."""

    lines: int
    records: int
    counts: dict[str, int]
    totals: dict[str, Any]
    fees: dict[str, Any]
    fixed: int
    needs_review: int
    exit_status: int


async def finish(conn: asyncpg.Connection, run_id: int, s: Summary) -> None:
    await conn.execute(
        "UPDATE reconcile_runs SET finished_at = clock_timestamp(), lines = $2, records = $3, counts = $4::jsonb, "
        "totals = $5::jsonb, fees = $6::jsonb, fixed = $7, needs_review = $8, exit_status = $9 WHERE id = $1",
        run_id, s.lines, s.records, _json(s.counts), _json(s.totals), _json(s.fees), s.fixed, s.needs_review,
        s.exit_status,
    )  # fmt: skip


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def run(conn: asyncpg.Connection, run_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM reconcile_runs WHERE id = $1", run_id)


async def previous(conn: asyncpg.Connection, row: asyncpg.Record) -> int | None:
    """The run of the same day before ``row``."""
    found: int | None = await conn.fetchval(
        "SELECT max(id) FROM reconcile_runs WHERE day = $1 AND id < $2", row["day"], row["id"]
    )
    return found


async def history(conn: asyncpg.Connection, day: date | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, day, trigger, source, started_at, finished_at, lines, records, counts, fixed, needs_review, "
        "exit_status FROM reconcile_runs WHERE $1::date IS NULL OR day = $1 ORDER BY id DESC LIMIT $2",
        day, limit,
    )  # fmt: skip


def items(conn: asyncpg.Connection, run_id: int, where: str) -> AsyncIterator[asyncpg.Record]:
    """A run's items matching ``where`` (a fixed SQL condition), by category and reference, from a cursor: the
    caller holds a transaction."""
    query = f"SELECT * FROM reconcile_items WHERE run_id = $1 AND ({where}) ORDER BY category, reference, type"
    return conn.cursor(query, run_id, prefetch=500).__aiter__()


def changes(conn: asyncpg.Connection, run_id: int, earlier: int) -> AsyncIterator[asyncpg.Record]:
    """Records whose category differs between ``earlier`` and ``run_id`` (absent: matched); from a cursor."""
    return conn.cursor(_CHANGES, run_id, earlier, prefetch=500).__aiter__()


@dataclass(frozen=True)
class LastRun:
    """The most recently finished run, for /metrics."""

    id: int
    day: date
    trigger: str
    finished_at: datetime
    counts: dict[str, int]
    fixed: int
    needs_review: int
    exit_status: int


async def last_run(conn: asyncpg.Connection | PoolConnectionProxy) -> LastRun | None:
    row = await conn.fetchrow(
        "SELECT id, day, trigger, finished_at, counts, fixed, needs_review, exit_status FROM reconcile_runs "
        "ORDER BY finished_at DESC LIMIT 1"
    )
    if row is None:
        return None
    return LastRun(row["id"], row["day"], row["trigger"], row["finished_at"], orjson.loads(row["counts"]),
                   row["fixed"], row["needs_review"], row["exit_status"])  # fmt: skip
