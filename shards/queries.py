"""Reads: wallets, their entries, transfers. Every read is scoped to the merchant that asks."""

from __future__ import annotations

import asyncpg

WALLET = (
    "SELECT id, merchant_id, currency, available, pending, reference, metadata::text AS metadata, "
    "extract(epoch FROM created_at)::bigint AS created FROM accounts WHERE id = $1 AND kind = 'wallet'"
)
TRANSFER = "SELECT * FROM transfers WHERE id = $1"
INBOUND = "SELECT status FROM inbound_transfers WHERE transfer_id = $1"
ENTRIES = (
    "SELECT id, amount, currency, kind, ref, memo, extract(epoch FROM created_at)::bigint AS created "
    "FROM ledger_entries WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
)


async def wallet(pool: asyncpg.Pool, wallet_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(WALLET, wallet_id)


async def transfer(pool: asyncpg.Pool, transfer_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(TRANSFER, transfer_id)


async def transfers(pool: asyncpg.Pool, transfer_ids: list[str]) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM transfers WHERE id = ANY($1::text[])", transfer_ids)


async def inbound(pool: asyncpg.Pool, transfer_id: str) -> str | None:
    """Leg 2's record on the destination shard: 'applied', 'aborted', or None before leg 2."""
    status: str | None = await pool.fetchval(INBOUND, transfer_id)
    return status


async def entries(pool: asyncpg.Pool, wallet_id: str, before: int | None, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(ENTRIES, wallet_id, before, limit)
