"""The JSON objects the simulator answers with and puts in its webhooks, from their database rows."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import asyncpg


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def movement(row: asyncpg.Record) -> dict[str, Any]:
    """A charge, refund or payout as the API shows it."""
    common = {
        "id": row["id"], "object": row["type"], "status": row["status"], "failure_code": row["failure_code"],
        "amount": row["amount"], "currency": row["currency"], "reference": row["reference"],
        "created": _unix(row["created"]),
    }  # fmt: skip
    if row["type"] == "charge":
        extra = {"payment_method": row["payment_method"], "amount_refunded": row["refunded"],
                 "disputed": row["disputed"]}  # fmt: skip
    elif row["type"] == "refund":
        extra = {"charge": row["charge"]}
    else:
        extra = {"destination": row["destination"], "arrival_date": _unix(row["settled_at"])}
    return {**common, **extra}


def session(row: asyncpg.Record, public_url: str) -> dict[str, Any]:
    return {
        "id": row["id"], "object": "hosted_session", "token": row["token"], "url": f"{public_url}/pay/{row['token']}",
        "amount": row["amount"], "currency": row["currency"], "return_url": row["return_url"],
        "reference": row["reference"], "payment_method": row["payment_method"],
        "status": "complete" if row["completed"] is not None else "open", "created": _unix(row["created"]),
    }  # fmt: skip


def record(row: asyncpg.Record) -> dict[str, Any]:
    """A line of ``/sim/records``: what was really done, under which key, carried by how many calls."""
    return {
        **movement(row), "type": row["type"], "idempotency_key": row["idempotency_key"], "calls": row["calls"],
        "settled_at": _unix(row["settled_at"]), "disputed": row["disputed"],
    }  # fmt: skip
