"""Wallets: create, read, list entries, and the operator's credit."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from shardpay import ids
from shardpay.domain.errors import ApiError
from shardpay.domain.events import render_event
from shardpay.services import render
from shardpay.services.outcome import Caller, Outcome, key_reused
from shards import ledger, queries
from shards.errors import on_shard
from shards.pools import Shards


@dataclass(frozen=True)
class CreateWallet:
    currency: str
    reference: str | None
    metadata: dict[str, Any] | None


async def create(shards: Shards, caller: Caller, cmd: CreateWallet) -> Outcome:
    # The slot follows the idempotency key, so a retry of this request lands on the same shard and finds its record.
    slot = ids.slot_for(caller.merchant_id, caller.key)
    shard = shards.index_of(slot)
    wallet_id = ids.new_id("wal", slot)
    created = int(time.time())
    obj = {
        "id": wallet_id, "object": "wallet", "currency": cmd.currency, "available": 0, "pending": 0,
        "reference": cmd.reference, "metadata": cmd.metadata or {}, "created": created,
    }  # fmt: skip
    event_id, event_body = render_event("wallet.created", caller.merchant_id, caller.request_id, obj, slot)
    metadata = orjson.dumps(cmd.metadata).decode() if cmd.metadata else None
    request = ledger.CreateWallet(
        caller.merchant_id, caller.key, caller.print, wallet_id, cmd.currency, cmd.reference, metadata, created,
        orjson.dumps(obj).decode(), event_id, event_body,
    )  # fmt: skip
    try:
        applied = await on_shard(shard, ledger.create_wallet(shards.pool(shard), request))
    except asyncpg.UniqueViolationError:
        applied = await on_shard(shard, ledger.replay(shards.pool(shard), caller.merchant_id, caller.key, caller.print))
    if applied.outcome == "key_reused":
        raise key_reused()
    assert applied.status is not None and applied.body is not None
    return Outcome.from_store(applied.status, applied.body, replayed=applied.outcome == "replay")


async def fetch(shards: Shards, merchant_id: str, wallet_id: str, param: str | None = None) -> asyncpg.Record:
    """The merchant's wallet, or 404 (another merchant's wallet is indistinguishable from none)."""
    slot = ids.parse(wallet_id, "wal")
    if slot is None:
        raise ApiError.not_found(param, wallet_id)
    shard = shards.index_of(slot)
    row = await on_shard(shard, queries.wallet(shards.pool(shard), wallet_id))
    if row is None or row["merchant_id"] != merchant_id:
        raise ApiError.not_found(param, wallet_id)
    return row


async def get(shards: Shards, caller: Caller, wallet_id: str) -> Outcome:
    return Outcome.of(200, render.wallet(await fetch(shards, caller.merchant_id, wallet_id)))


async def entries(shards: Shards, caller: Caller, wallet_id: str, limit: int, starting_after: str | None) -> Outcome:
    await fetch(shards, caller.merchant_id, wallet_id)
    before = _entry_number(starting_after)
    slot = ids.parse(wallet_id, "wal")
    assert slot is not None
    shard = shards.index_of(slot)
    rows = await on_shard(shard, queries.entries(shards.pool(shard), wallet_id, before, limit + 1))
    data = [render.entry(row, wallet_id) for row in rows[:limit]]
    return Outcome.of(200, {"object": "list", "data": data, "has_more": len(rows) > limit})


def _entry_number(starting_after: str | None) -> int | None:
    if starting_after is None:
        return None
    number = starting_after.removeprefix("ent_")
    if not starting_after.startswith("ent_") or not (number.isascii() and number.isdigit()) or len(number) > 18:
        raise ApiError.invalid("starting_after", f"'starting_after' must be a ledger entry id, got {starting_after!r}.")
    return int(number)


async def credit(shards: Shards, wallet_id: str, amount: int, reason: str) -> dict[str, Any]:
    """An operator's adjustment from the shard's funding account; audited like any other ledger transaction."""
    slot = ids.parse(wallet_id, "wal")
    if slot is None:
        raise ApiError.not_found("wallet", wallet_id)
    shard = shards.index_of(slot)
    ref = f"adj_{secrets.token_hex(10)}"
    row = await on_shard(shard, queries.wallet(shards.pool(shard), wallet_id))
    if row is None:
        raise ApiError.not_found("wallet", wallet_id)
    obj = {"object": "adjustment", "id": ref, "wallet": wallet_id, "amount": amount, "reason": reason}
    event_id, event_body = render_event("wallet.credited", row["merchant_id"], ref, obj, slot)
    available = await on_shard(
        shard, ledger.credit_wallet(shards.pool(shard), wallet_id, amount, ref, reason, event_id, event_body)
    )
    if available is None:
        raise ApiError.not_found("wallet", wallet_id)
    return {**obj, "currency": row["currency"], "available": available}
