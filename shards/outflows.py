"""Payouts and refunds in the shards: money that leaves a wallet for the PSP, each call one round trip
(``shards/sql/shard/payouts.sql``, ``refunds.sql``)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shards.ledger import Applied


@dataclass(frozen=True)
class NewPayout:
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    payout_id: str
    source: str
    amount: int
    currency: str
    destination: str
    request_id: str
    created: int
    body: str
    fail_body: str
    event_id: str
    event_body: str


async def create_payout(pool: asyncpg.Pool, p: NewPayout) -> Applied:
    row = await pool.fetchrow(
        "SELECT * FROM sp_create_payout($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        p.merchant_id, p.idempotency_key, p.fingerprint, p.payout_id, p.source, p.amount, p.currency, p.destination,
        p.request_id, p.created, p.body, p.fail_body, p.event_id, p.event_body,
    )  # fmt: skip
    assert row is not None
    return Applied(row["outcome"], row["status"], row["body"])


@dataclass(frozen=True)
class NewRefund:
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    refund_id: str
    payment_order: str
    amount: int | None  # None: all that is left of the order
    request_id: str
    created: int
    body: str  # without the amount if it was not given: the database fills it in
    fail_body: str
    event_id: str
    event_body: str


async def create_refund(pool: asyncpg.Pool, r: NewRefund) -> Applied:
    row = await pool.fetchrow(
        "SELECT * FROM sp_create_refund($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        r.merchant_id, r.idempotency_key, r.fingerprint, r.refund_id, r.payment_order, r.amount, r.request_id,
        r.created, r.body, r.fail_body, r.event_id, r.event_body,
    )  # fmt: skip
    assert row is not None
    return Applied(row["outcome"], row["status"], row["body"])


async def finish(
    pool: asyncpg.Pool, kind: str, object_id: str, status: str, psp_id: str | None, failure_code: str | None,
    event_id: str, event_body: str,
) -> tuple[str, bool]:  # fmt: skip
    """A payout's or refund's outcome, once: (its status now, whether this call decided it)."""
    function = {"payout": "sp_finish_payout", "refund": "sp_finish_refund"}[kind]
    row = await pool.fetchrow(
        f"SELECT * FROM {function}($1, $2, $3, $4, $5, $6)",
        object_id, status, psp_id, failure_code, event_id, event_body,
    )  # fmt: skip
    assert row is not None
    return row["r_status"], row["r_applied"]


async def payout(pool: asyncpg.Pool, payout_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM payouts WHERE id = $1", payout_id)


async def refund(pool: asyncpg.Pool, refund_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", refund_id)
