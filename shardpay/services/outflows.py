"""Money out: payouts from a wallet to a bank account, and refunds of payment orders.

Both take the money out of a wallet at once, under its row lock, into an in-flight account (so two payouts of a
whole balance cannot both pass), and queue the PSP's call for the executors; the outcome settles it or gives
it back (``shardpay.services.psp_work``). Each is stored on the shard of the money it moves, with its
idempotency record; when that is not the key's home shard, the key is claimed at home first
(``shardpay.services.idempotent``), as for transfers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import orjson

from shardpay import ids
from shardpay.domain.errors import ApiError
from shardpay.domain.events import render_event
from shardpay.services import idempotent, render
from shardpay.services.outcome import Caller, Outcome, stored_answer
from shards import ledger, outflows
from shards.errors import on_shard
from shards.pools import Shards

BANK_ACCOUNT = re.compile(r"ba_[A-Za-z0-9_]{1,100}")


@dataclass(frozen=True)
class CreatePayout:
    source: str
    amount: int
    currency: str
    destination: str


@dataclass(frozen=True)
class CreateRefund:
    payment_order: str
    amount: int | None


def _wallet_too_low(caller: Caller, message: str) -> str:
    error = ApiError(402, "payment_error", "insufficient_funds", message, "amount")
    return orjson.dumps(error.body(caller.request_id)).decode()


async def create_payout(shards: Shards, caller: Caller, cmd: CreatePayout) -> Outcome:
    slot = ids.parse(cmd.source, "wal")
    if slot is None:
        raise ApiError.not_found("source", cmd.source)
    shard = shards.index_of(slot)
    await idempotent.claim(shards, caller.merchant_id, caller.key, caller.print, shard)
    payout_id, created = ids.new_id("out", slot), int(time.time())
    row = {
        "id": payout_id, "source": cmd.source, "amount": cmd.amount, "currency": cmd.currency,
        "destination": cmd.destination, "status": "processing", "failure_code": None, "created": created,
    }  # fmt: skip
    obj = render.payout(row)
    event_id, event_body = render_event("payout.created", caller.merchant_id, caller.request_id, obj, slot, created)
    request = outflows.NewPayout(
        caller.merchant_id, caller.key, caller.print, payout_id, cmd.source, cmd.amount, cmd.currency,
        cmd.destination, caller.request_id, created, orjson.dumps(obj).decode(),
        _wallet_too_low(caller, "The source wallet's available balance is too low."), event_id, event_body,
    )  # fmt: skip
    applied = await _stored(shards, shard, caller, outflows.create_payout(shards.pool(shard), request))
    if applied.outcome == "source_missing":
        raise ApiError.not_found("source", cmd.source)
    if applied.outcome == "currency_mismatch":
        raise ApiError.currency_mismatch(f"The source wallet does not hold {cmd.currency}.")
    return stored_answer(applied)


async def create_refund(shards: Shards, caller: Caller, cmd: CreateRefund) -> Outcome:
    slot = ids.parse(cmd.payment_order, "po")
    if slot is None:
        raise ApiError.not_found("payment_order", cmd.payment_order)
    shard = shards.index_of(slot)
    await idempotent.claim(shards, caller.merchant_id, caller.key, caller.print, shard)
    refund_id, created = ids.new_id("re", slot), int(time.time())
    row = {"id": refund_id, "payment_order": cmd.payment_order, "amount": cmd.amount, "currency": None,
           "status": "processing", "failure_code": None, "created": created}  # fmt: skip
    obj = render.refund(row)  # amount and currency filled in by the database, which knows the order
    event_id, event_body = render_event("refund.created", caller.merchant_id, caller.request_id, obj, slot, created)
    request = outflows.NewRefund(
        caller.merchant_id, caller.key, caller.print, refund_id, cmd.payment_order, cmd.amount, caller.request_id,
        created, orjson.dumps(obj).decode(),
        _wallet_too_low(caller, "The wallet the order credited no longer holds the amount."), event_id, event_body,
    )  # fmt: skip
    applied = await _stored(shards, shard, caller, outflows.create_refund(shards.pool(shard), request))
    if applied.outcome == "order_missing":
        raise ApiError.not_found("payment_order", cmd.payment_order)
    if applied.outcome == "order_not_refundable":
        raise ApiError.invalid("payment_order", "Only a succeeded payment order with money left to refund can be "
                               "refunded.", code="charge_not_refundable")  # fmt: skip
    if applied.outcome == "amount_too_large":
        raise ApiError.invalid("amount", "'amount' is more than what is left to refund of this order.",
                               code="amount_too_large")  # fmt: skip
    return stored_answer(applied)


async def _stored(shards: Shards, shard: int, caller: Caller, call: Awaitable[ledger.Applied]) -> ledger.Applied:
    try:
        return await on_shard(shard, call)
    except asyncpg.UniqueViolationError:  # a concurrent request with this key committed first: its answer
        return await on_shard(shard, ledger.replay(shards.pool(shard), caller.merchant_id, caller.key, caller.print))


Reader = Callable[[asyncpg.Pool, str], Awaitable[asyncpg.Record | None]]


async def _get(shards: Shards, caller: Caller, object_id: str, prefix: str, read: Reader) -> asyncpg.Record:
    slot = ids.parse(object_id, prefix)
    if slot is None:
        raise ApiError.not_found(None, object_id)
    shard = shards.index_of(slot)
    row = await on_shard(shard, read(shards.pool(shard), object_id))
    if row is None or row["merchant_id"] != caller.merchant_id:
        raise ApiError.not_found(None, object_id)
    return row


async def get_payout(shards: Shards, caller: Caller, payout_id: str) -> Outcome:
    return Outcome.of(200, render.payout(await _get(shards, caller, payout_id, "out", outflows.payout)))


async def get_refund(shards: Shards, caller: Caller, refund_id: str) -> Outcome:
    return Outcome.of(200, render.refund(await _get(shards, caller, refund_id, "re", outflows.refund)))
