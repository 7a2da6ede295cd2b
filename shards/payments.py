"""Payments and their orders in the shards: each call one round trip to one shard (``shards/sql/shard/payments.sql``),
but for the payment's final event, written in the transaction that records its last order's outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from shards.ledger import Applied


@dataclass(frozen=True)
class NewPayment:
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    payment_id: str
    payment_method: str
    orders: list[dict[str, Any]]  # as placed: id, payment_id, merchant_id, destination, amount, currency, ...
    request_id: str
    created: int
    body: str
    event_id: str
    event_body: str


async def create(pool: asyncpg.Pool, p: NewPayment) -> Applied:
    row = await pool.fetchrow(
        "SELECT * FROM sp_create_payment($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11)",
        p.merchant_id, p.idempotency_key, p.fingerprint, p.payment_id, p.payment_method,
        orjson.dumps(p.orders).decode(), p.request_id, p.created, p.body, p.event_id, p.event_body,
    )  # fmt: skip
    assert row is not None
    return Applied(row["outcome"], row["status"], row["body"])


async def place(pool: asyncpg.Pool, orders: Sequence[dict[str, Any]]) -> int:
    """Put orders on this shard (their destinations'); each once. Returns how many were new."""
    placed: int = await pool.fetchval("SELECT sp_place_orders($1::jsonb)", orjson.dumps(list(orders)).decode())
    return placed


async def mark_materialized(pool: asyncpg.Pool, payment_id: str) -> None:
    await pool.execute("UPDATE payments SET materialized = true, updated_at = now() WHERE id = $1", payment_id)


@dataclass(frozen=True)
class Finished:
    status: str  # the order's status now ('missing' if there is none)
    applied: bool  # this call decided it
    payment_id: str | None


async def finish_order(
    pool: asyncpg.Pool, order_id: str, status: str, charge_id: str | None, failure_code: str | None,
    event_id: str, event_body: str,
) -> Finished:  # fmt: skip
    row = await pool.fetchrow(
        "SELECT * FROM sp_finish_order($1, $2, $3, $4, $5, $6)",
        order_id, status, charge_id, failure_code, event_id, event_body,
    )  # fmt: skip
    assert row is not None
    return Finished(row["r_status"], row["r_applied"], row["r_payment_id"])


# Renders the payment's final event from (payment row, its results as {order id: status}): (event id, body).
PaymentEvent = Callable[[asyncpg.Record, dict[str, str]], tuple[str, str]]


async def record_result(pool: asyncpg.Pool, order_id: str, payment_id: str, status: str, event: PaymentEvent) -> bool:
    """On the payment's home shard: the order's outcome, once; if it was the last, the payment's final status and
    event in the same transaction. True if this call completed the payment."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM sp_record_result($1, $2, $3)", order_id, payment_id, status)
        assert row is not None
        if not row["r_completed"]:
            return False
        payment = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)
        assert payment is not None
        event_id, body = event(payment, orjson.loads(row["r_results"]))
        await conn.execute(
            "INSERT INTO outbox (event_id, merchant_id, type, body) VALUES ($1, $2, $3, $4)",
            event_id, payment["merchant_id"], f"payment.{row['r_status']}", body,
        )  # fmt: skip
        return True


async def mark_reported(pool: asyncpg.Pool, order_id: str) -> None:
    await pool.execute("UPDATE payment_orders SET reported = true WHERE id = $1", order_id)


async def payment(pool: asyncpg.Pool, payment_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)


async def orders(pool: asyncpg.Pool, order_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM payment_orders WHERE id = ANY($1::text[])", list(order_ids))


async def order(pool: asyncpg.Pool, order_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM payment_orders WHERE id = $1", order_id)


async def unmaterialized(pool: asyncpg.Pool, older_than: float, limit: int) -> list[asyncpg.Record]:
    """Payments whose orders a gateway may not have placed (it stopped, or a shard was down)."""
    return await pool.fetch(
        "SELECT * FROM payments WHERE NOT materialized AND created_at < now() - make_interval(secs => $1) "
        "ORDER BY created_at LIMIT $2",
        older_than, limit,
    )  # fmt: skip


async def unreported(pool: asyncpg.Pool, older_than: float, limit: int) -> list[asyncpg.Record]:
    """Final orders whose outcome has not reached their payment's home shard."""
    return await pool.fetch(
        "SELECT * FROM payment_orders WHERE status <> 'processing' AND NOT reported "
        "AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2",
        older_than, limit,
    )  # fmt: skip
