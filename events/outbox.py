"""The shard outbox, seen from the relay: claim unpublished rows, mark them published, prune old ones."""

from __future__ import annotations

import asyncpg

from events.db import Conn

_CLAIM = (
    "SELECT seq, event_id, body FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
)
# Only the oldest rows by seq are candidates: seq and published_at grow together, so walking from the head
# reaches every prunable row without an index on published_at (a full scan per round would grow with traffic).
_PRUNE_HEAD = (
    "WITH head AS (SELECT seq FROM outbox ORDER BY seq LIMIT $1) "
    "DELETE FROM outbox o USING head WHERE o.seq = head.seq "
    "AND o.published_at < now() - make_interval(secs => $2)"
)


async def claim(conn: Conn, limit: int) -> list[asyncpg.Record]:
    """Lock up to ``limit`` unpublished rows, oldest first, skipping rows another relay holds.

    Must run inside a transaction: the locks are what keep two relays from publishing the same row at once.
    """
    return await conn.fetch(_CLAIM, limit)


async def mark_published(conn: Conn, seqs: list[int]) -> None:
    await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])", seqs)


async def prune(pool: asyncpg.Pool, older_than: float, chunk: int = 5000, max_chunks: int = 20) -> int:
    """Delete rows published more than ``older_than`` seconds ago, chunk by chunk; how many went."""
    total = 0
    for _ in range(max_chunks):
        status = await pool.execute(_PRUNE_HEAD, chunk, older_than)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted == 0:
            break
    return total


async def outbox_lag(pool: asyncpg.Pool) -> tuple[int, float]:
    """(unpublished rows, age in seconds of the oldest) on one shard, for ``/metrics``."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age "
        "FROM outbox WHERE published_at IS NULL"
    )
    assert row is not None
    return int(row["n"]), float(row["age"])
