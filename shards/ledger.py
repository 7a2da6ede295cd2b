"""The money-moving steps: every change to balances goes through one of these calls, each one round trip.

The performance work batches ``open_transfer``: keep callers going through this module only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Applied:
    """What a money transaction decided: ``outcome`` plus the stored response (for stored outcomes)."""

    outcome: str
    status: int | None
    body: str | None


@dataclass(frozen=True)
class OpenTransfer:
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    transfer_id: str
    source: str
    destination: str
    amount: int
    currency: str
    description: str | None
    request_id: str
    created: int
    cross_shard: bool
    ok_body: str
    fail_body: str
    event_id: str
    event_body: str


async def open_transfer(pool: asyncpg.Pool, t: OpenTransfer) -> Applied:
    row = await pool.fetchrow(
        "SELECT * FROM sp_open_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        t.merchant_id, t.idempotency_key, t.fingerprint, t.transfer_id, t.source, t.destination, t.amount,
        t.currency, t.description, t.request_id, t.created, t.cross_shard, t.ok_body, t.fail_body,
        t.event_id, t.event_body,
    )  # fmt: skip
    assert row is not None
    return Applied(row["outcome"], row["status"], row["body"])


async def _many(pool: asyncpg.Pool, function: str, batch: Sequence[Any]) -> list[asyncpg.Record]:
    """Call a batch function with one array per dataclass field; its rows come back in batch order."""
    names = tuple(batch[0].__dataclass_fields__)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    rows = await pool.fetch(
        f"SELECT * FROM {function}({placeholders})", *([getattr(b, n) for b in batch] for n in names)
    )
    ordered = sorted(rows, key=lambda row: int(row["idx"]))
    assert [row["idx"] for row in ordered] == list(range(len(batch))), f"{function} answered for every call"
    return ordered


async def open_transfers(pool: asyncpg.Pool, batch: Sequence[OpenTransfer]) -> list[Applied]:
    """Group commit: open every transfer of ``batch`` in one transaction; each gets its own outcome."""
    rows = await _many(pool, "sp_open_transfers", batch)
    return [Applied(row["outcome"], row["status"], row["body"]) for row in rows]


@dataclass(frozen=True)
class CreateWallet:
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    wallet_id: str
    currency: str
    reference: str | None
    metadata: str | None
    created: int
    body: str
    event_id: str
    event_body: str


async def create_wallet(pool: asyncpg.Pool, w: CreateWallet) -> Applied:
    row = await pool.fetchrow(
        "SELECT * FROM sp_create_wallet($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, 'wallet.created', $11)",
        w.merchant_id, w.idempotency_key, w.fingerprint, w.wallet_id, w.currency, w.reference, w.metadata,
        w.created, w.body, w.event_id, w.event_body,
    )  # fmt: skip
    assert row is not None
    return Applied(row["outcome"], row["status"], row["body"])


async def replay(pool: asyncpg.Pool, merchant_id: str, key: str, fingerprint: str) -> Applied:
    """The stored response for a key (after a concurrent duplicate won the race to store it)."""
    row = await pool.fetchrow("SELECT * FROM sp_idempotent_replay($1, $2, $3)", merchant_id, key, fingerprint)
    assert row is not None
    return Applied(row["outcome"] or "missing", row["status"], row["body"])


async def _one(pool: asyncpg.Pool, function: str, call: Any) -> str:
    """Call a single-step function with the dataclass's fields as its arguments, in order."""
    names = tuple(call.__dataclass_fields__)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    result: str = await pool.fetchval(f"SELECT {function}({placeholders})", *(getattr(call, n) for n in names))
    return result


@dataclass(frozen=True)
class Inbound:
    transfer_id: str
    merchant_id: str
    destination: str
    amount: int
    currency: str


async def credit_inbound(pool: asyncpg.Pool, leg: Inbound) -> str:
    """Second saga leg on the destination shard: 'applied' or 'aborted', at most one credit per transfer."""
    return (await credit_inbounds(pool, [leg]))[0]


async def credit_inbounds(pool: asyncpg.Pool, batch: Sequence[Inbound]) -> list[str]:
    """Leg 2 for many transfers in one transaction on their destination shard."""
    return [row["result"] for row in await _many(pool, "sp_credit_inbounds", batch)]


async def fence_inbound(pool: asyncpg.Pool, leg: Inbound) -> str:
    """Recovery's fence on the destination shard: returns 'applied' (too late to abort) or 'aborted'."""
    return await _one(pool, "sp_fence_inbound", leg)


@dataclass(frozen=True)
class Finish:
    transfer_id: str
    inbound: str
    body: str
    event_id: str
    event_body: str


async def finish_transfer(pool: asyncpg.Pool, leg: Finish) -> str:
    """Last saga leg on the source shard: settle or compensate; returns the transfer's final status."""
    return (await finish_transfers(pool, [leg]))[0]


async def finish_transfers(pool: asyncpg.Pool, batch: Sequence[Finish]) -> list[str]:
    """Leg 3 for many transfers in one transaction on their source shard."""
    return [row["result"] for row in await _many(pool, "sp_finish_transfers", batch)]


async def credit_wallet(
    pool: asyncpg.Pool, wallet_id: str, amount: int, ref: str, memo: str, event_id: str, event_body: str
) -> int | None:
    """An operator's adjustment from the shard's funding account; None if there is no such wallet."""
    result: int | None = await pool.fetchval(
        "SELECT sp_credit_wallet($1, $2, $3, $4, $5, $6)", wallet_id, amount, ref, memo, event_id, event_body
    )
    return result
