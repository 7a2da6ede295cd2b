"""The executors' queue on each shard (``psp_work``): claim what is due, then retry, finish (the finishing
transaction deletes the row) or bury it; and the dead-letter queue an operator lists and replays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

# Due rows of the given kinds, oldest first, skipping rows another worker holds; each claimed row's next attempt
# moves past the lease, and 'new' becomes 'unknown' (a call may reach the PSP from now on). Returns the state
# before the claim: what the worker knows of the PSP's side.
_CLAIM = """
UPDATE psp_work w
SET next_attempt_at = now() + make_interval(secs => $3),
    psp_state = CASE WHEN c.psp_state = 'new' THEN 'unknown' ELSE c.psp_state END, updated_at = now()
FROM (SELECT id, psp_state FROM psp_work
      WHERE dead_reason IS NULL AND next_attempt_at <= now() AND kind = ANY ($1::text[])
      ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) c
WHERE w.id = c.id
RETURNING w.id, w.kind, w.attempts, c.psp_state
"""
_RETRY = """
UPDATE psp_work SET next_attempt_at = now() + make_interval(secs => $2), psp_state = $3, last_error = $4,
    attempts = attempts + $5, updated_at = now()
WHERE id = $1
"""


@dataclass(frozen=True)
class Claimed:
    id: str
    kind: str  # charge | payout | refund
    attempts: int  # calls counted so far
    psp_state: str  # before this claim: new | unknown | pending


async def claim(pool: asyncpg.Pool, kinds: Sequence[str], limit: int, lease: float) -> list[Claimed]:
    rows = await pool.fetch(_CLAIM, list(kinds), limit, lease)
    return [Claimed(r["id"], r["kind"], r["attempts"], r["psp_state"]) for r in rows]


async def retry(pool: asyncpg.Pool, work_id: str, delay: float, psp_state: str, error: str | None,
                counted: bool) -> None:  # fmt: skip
    """Try again after ``delay`` seconds; ``counted``: this attempt reached (or may have reached) the PSP."""
    await pool.execute(_RETRY, work_id, delay, psp_state, error, int(counted))


async def bury(pool: asyncpg.Pool, work_id: str, reason: str, attempts: int | None = None) -> None:
    """Dead-letter it (after ``attempts`` attempts in all, if given): no worker claims it until an operator
    replays it."""
    await pool.execute(
        "UPDATE psp_work SET dead_reason = $2, last_error = $2, attempts = coalesce($3, attempts), updated_at = now() "
        "WHERE id = $1",
        work_id, reason, attempts,
    )  # fmt: skip


async def dead(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, kind, attempts, psp_state, dead_reason, created_at, updated_at FROM psp_work "
        "WHERE dead_reason IS NOT NULL ORDER BY updated_at LIMIT $1",
        limit,
    )


async def replay(pool: asyncpg.Pool, work_id: str | None) -> list[str]:
    """Put dead-lettered work back (one id, or every one when None): due now, its attempts counted afresh, and
    'unknown' so that its first step asks the PSP what became of any earlier call. Work that is not dead (or no
    longer exists, because it finished) is left alone: replaying twice is harmless."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "UPDATE psp_work SET dead_reason = NULL, attempts = 0, next_attempt_at = now(), psp_state = 'unknown', "
            "updated_at = now() WHERE dead_reason IS NOT NULL AND ($1::text IS NULL OR id = $1) RETURNING id",
            work_id,
        )
        if rows:
            await conn.execute("SELECT pg_notify('psp_work', '')")  # the executors, at commit
    return [r["id"] for r in rows]
