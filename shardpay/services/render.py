"""API objects, rendered from rows or from what a handler is about to store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

# A transfer as stored: an asyncpg record, or the same fields in a dict when they are already in hand.
Row = asyncpg.Record | Mapping[str, Any]


def wallet(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "wallet",
        "currency": row["currency"],
        "available": row["available"],
        "pending": row["pending"],
        "reference": row["reference"],
        "metadata": orjson.loads(row["metadata"]) if row["metadata"] else {},
        "created": row["created"],
    }


def transfer(
    transfer_id: str, source: str, destination: str, amount: int, currency: str,
    description: str | None, status: str, created: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": transfer_id,
        "object": "transfer",
        "source": source,
        "destination": destination,
        "amount": amount,
        "currency": currency,
        "description": description,
        "status": status,
        "created": created,
    }


def transfer_row(row: Row, status: str | None = None) -> dict[str, Any]:
    return transfer(
        row["id"], row["source"], row["destination"], row["amount"], row["currency"], row["description"],
        status or row["status"], row["created"],
    )  # fmt: skip


def entry(row: asyncpg.Record, wallet_id: str) -> dict[str, Any]:
    return {
        "id": f"ent_{row['id']}",
        "object": "ledger_entry",
        "wallet": wallet_id,
        "amount": row["amount"],
        "currency": row["currency"],
        "type": row["kind"],
        "reference": row["ref"],
        "memo": row["memo"],
        "created": row["created"],
    }


def payment_order(row: Row, status: str | None = None, failure_code: str | None = None) -> dict[str, Any]:
    """An order from its row (or, before it is placed, from the payment's copy of it)."""
    return {
        "id": row["id"],
        "object": "payment_order",
        "payment": row["payment_id"],
        "destination": row["destination"],
        "amount": row["amount"],
        "currency": row["currency"],
        "reference": row["reference"],
        "status": status or row.get("status", "processing"),
        "failure_code": failure_code if status else row.get("failure_code"),
        "amount_refunded": row.get("refunded", 0),
        "created": row["created"],
    }


def payment(row: Row, orders: list[dict[str, Any]]) -> dict[str, Any]:
    """A payment; its status follows its orders (``payment_status``)."""
    return {
        "id": row["id"],
        "object": "payment",
        "payment_method": row["payment_method"],
        "status": payment_status([order["status"] for order in orders]),
        "orders": orders,
        "created": row["created"],
    }


def payment_status(order_statuses: list[str]) -> str:
    if "processing" in order_statuses:
        return "processing"
    succeeded = order_statuses.count("succeeded")
    if succeeded == len(order_statuses):
        return "succeeded"
    return "failed" if succeeded == 0 else "partially_failed"


def payout(row: Row, status: str | None = None, failure_code: str | None = None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "payout",
        "source": row["source"],
        "amount": row["amount"],
        "currency": row["currency"],
        "destination": row["destination"],
        "status": status or row["status"],
        "failure_code": failure_code if status else row["failure_code"],
        "created": row["created"],
    }


def refund(row: Row, status: str | None = None, failure_code: str | None = None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "refund",
        "payment_order": row["payment_order"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": status or row["status"],
        "failure_code": failure_code if status else row["failure_code"],
        "created": row["created"],
    }
