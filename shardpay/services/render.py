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
