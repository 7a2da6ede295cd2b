"""Durable idempotency records outlive Redis for 24 hours, then go."""

from __future__ import annotations

import httpx

from shards.pools import Shards
from shards.retention import prune_idempotency
from tests.conftest import key, post


async def test_expired_records_are_pruned_and_fresh_ones_kept(client: httpx.AsyncClient, shards: Shards) -> None:
    old_key, fresh_key = key(), key()
    await post(client, "/v1/wallets", {"currency": "USD"}, old_key)
    await post(client, "/v1/wallets", {"currency": "USD"}, fresh_key)
    for pool in shards.pools:
        await pool.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = $1", old_key
        )
    deleted = sum([await prune_idempotency(pool, batch=1) for pool in shards.pools])
    assert deleted >= 1
    remaining = [await pool.fetchval("SELECT array_agg(key) FROM idempotency_keys") or [] for pool in shards.pools]
    kept = {k for keys in remaining for k in keys}
    assert old_key not in kept and fresh_key in kept
