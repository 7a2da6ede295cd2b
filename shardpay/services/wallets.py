"""Wallets: create, read, list entries, and the operator's credit."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

import idempotency
from shardpay import ids
from shardpay.domain.errors import ApiError
from shardpay.domain.events import render_event
from shardpay.services import idempotent, reads, render
from shardpay.services.outcome import Caller, Outcome, key_reused, stored_answer
from shards import ledger, queries
from shards.errors import on_shard
from shards.pools import Shards


@dataclass(frozen=True)
class CreateWallet:
    currency: str
    reference: str | None
    metadata: dict[str, Any] | None


async def create(shards: Shards, caller: Caller, cmd: CreateWallet) -> Outcome:
    # The slot is the key's home (shardpay.services.idempotent), so a retry of this request lands on the same shard
    # and finds its record, and the same key reused for any other write meets it there.
    slot = idempotent.home_slot(caller.merchant_id, caller.key)
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
    return stored_answer(applied)  # a claim here is another write's


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
    """A page of the wallet's entries: a lag-tolerant read, from the shard's replica if it has one (``reads``)."""
    slot = ids.parse(wallet_id, "wal")
    if slot is None:
        raise ApiError.not_found(None, wallet_id)
    shard = shards.index_of(slot)
    wallet = await reads.lag_tolerant(shards, shard, lambda pool: queries.wallet(pool, wallet_id), _exists)
    if wallet is None or wallet["merchant_id"] != caller.merchant_id:
        raise ApiError.not_found(None, wallet_id)
    before = _entry_number(starting_after)
    rows = await reads.lag_tolerant(shards, shard, lambda pool: queries.entries(pool, wallet_id, before, limit + 1))
    data = [render.entry(row, wallet_id) for row in rows[:limit]]
    return Outcome.of(200, {"object": "list", "data": data, "has_more": len(rows) > limit})


def _exists(row: asyncpg.Record | None) -> bool:
    return row is not None


def _entry_number(starting_after: str | None) -> int | None:
    if starting_after is None:
        return None
    number = starting_after.removeprefix("ent_")
    if not starting_after.startswith("ent_") or not (number.isascii() and number.isdigit()) or len(number) > 18:
        raise ApiError.invalid("starting_after", f"'starting_after' must be a ledger entry id, got {starting_after!r}.")
    return int(number)


# The namespace of operators' idempotency keys (``shardpay wallets credit``): no merchant id looks like it.
OPERATOR = "operator"


async def credit(
    shards: Shards, wallet_id: str, amount: int, reason: str, idempotency_key: str | None = None
) -> dict[str, Any]:
    """An operator's adjustment from the shard's funding account; audited like any other ledger transaction.

    Idempotent by ``idempotency_key`` (one is made up when none is given, and returned): the same key credits
    once, and a re-run answers the first credit's result with ``replayed``; the same key with another wallet,
    amount or reason is refused (422), for 24 hours, like a merchant's."""
    slot = ids.parse(wallet_id, "wal")
    if slot is None:
        raise ApiError.not_found("wallet", wallet_id)
    shard = shards.index_of(slot)
    row = await on_shard(shard, queries.wallet(shards.pool(shard), wallet_id))
    if row is None:
        raise ApiError.not_found("wallet", wallet_id)
    key = idempotency_key or f"credit_{secrets.token_hex(12)}"  # the CLI makes one up itself and prints it
    fingerprint = idempotency.fingerprint("CLI", "wallets credit", [wallet_id, amount, reason])
    await idempotent.claim(shards, OPERATOR, key, fingerprint, shard)
    ref = f"adj_{secrets.token_hex(10)}"
    obj = {"object": "adjustment", "id": ref, "wallet": wallet_id, "amount": amount, "reason": reason}
    event_id, event_body = render_event("wallet.credited", row["merchant_id"], ref, obj, slot)
    request = ledger.CreditWallet(
        OPERATOR, key, fingerprint, wallet_id, amount, ref, reason, orjson.dumps(obj).decode(), event_id, event_body
    )
    pool = shards.pool(shard)
    try:
        applied = await on_shard(shard, ledger.credit_wallet(pool, request))
    except asyncpg.UniqueViolationError:  # a concurrent run with the same key committed first: its answer
        applied = await on_shard(shard, ledger.replay(pool, OPERATOR, key, fingerprint))
    if applied.outcome in ("key_reused", "claimed"):
        raise key_reused()
    if applied.outcome == "wallet_missing" or applied.body is None:
        raise ApiError.not_found("wallet", wallet_id)
    return {**orjson.loads(applied.body), "idempotency_key": key, "replayed": applied.outcome == "replay"}
