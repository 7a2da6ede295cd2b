"""Idempotency records are kept 24 hours (API.md), then deleted in small batches so no lock is held for long."""

from __future__ import annotations

import asyncpg

RETENTION_S = 24 * 3600

# Only keys whose response is final: a key still pointing at an unfinished cross-shard transfer stays.
_PRUNE = """
DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => $1) AND final
    LIMIT $2))
"""


async def prune_idempotency(pool: asyncpg.Pool, older_than_s: float = RETENTION_S, batch: int = 5_000) -> int:
    """Delete expired records, at most ``batch`` per statement, until none is left; returns how many went."""
    total = 0
    while True:
        status: str = await pool.execute(_PRUNE, float(older_than_s), batch)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch:
            return total
