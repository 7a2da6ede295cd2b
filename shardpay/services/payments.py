"""Payments: pay-ins through the PSP, one payment of 1-50 orders, each order crediting its destination wallet.

A payment is stored on its idempotency key's home shard with its idempotency record, in one transaction, and
answered at once ('processing'); its orders are then placed on their destination wallets' shards (each amount
in its wallet's ``pending``, its charge queued for the executors: ``shardpay.services.executor``). If the
gateway stops before placing them, or a shard is down, the sweeper places them from the payment's own copy.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from shardpay import ids
from shardpay.domain.errors import ApiError
from shardpay.domain.events import render_event
from shardpay.services import idempotent, render
from shardpay.services.outcome import Caller, Outcome, stored_answer
from shards import ledger, payments
from shards.errors import on_shard
from shards.pools import Shards

MAX_ORDERS = 50
PAYMENT_METHOD = re.compile(r"pm_[A-Za-z0-9_]{1,100}")


@dataclass(frozen=True)
class NewOrder:
    destination: str
    amount: int
    currency: str
    reference: str | None


@dataclass(frozen=True)
class CreatePayment:
    payment_method: str
    orders: list[NewOrder]


async def create(shards: Shards, caller: Caller, cmd: CreatePayment) -> Outcome:
    await _check_destinations(shards, caller, cmd.orders)
    slot = idempotent.home_slot(caller.merchant_id, caller.key)
    home = shards.index_of(slot)
    payment_id, created = ids.new_id("pay", slot), int(time.time())
    orders = [_order(caller, payment_id, cmd.payment_method, order, created) for order in cmd.orders]
    row = {"id": payment_id, "payment_method": cmd.payment_method, "created": created}
    obj = render.payment(row, [render.payment_order(order) for order in orders])
    event_id, event_body = render_event("payment.created", caller.merchant_id, caller.request_id, obj, slot, created)
    request = payments.NewPayment(
        caller.merchant_id, caller.key, caller.print, payment_id, cmd.payment_method, orders, caller.request_id,
        created, orjson.dumps(obj).decode(), event_id, event_body,
    )  # fmt: skip
    pool = shards.pool(home)
    try:
        applied = await on_shard(home, payments.create(pool, request))
    except asyncpg.UniqueViolationError:  # a concurrent request with this key committed first: its answer
        applied = await on_shard(home, ledger.replay(pool, caller.merchant_id, caller.key, caller.print))
    answer = stored_answer(applied)
    if applied.outcome == "applied":
        await place(shards, payment_id, orders)
    return answer


def _order(caller: Caller, payment_id: str, method: str, order: NewOrder, created: int) -> dict[str, Any]:
    slot = ids.parse(order.destination, "wal")
    assert slot is not None, "checked by _check_destinations"
    return {
        "id": ids.new_id("po", slot), "payment_id": payment_id, "merchant_id": caller.merchant_id,
        "destination": order.destination, "amount": order.amount, "currency": order.currency,
        "reference": order.reference, "payment_method": method, "request_id": caller.request_id, "created": created,
    }  # fmt: skip


async def _check_destinations(shards: Shards, caller: Caller, orders: list[NewOrder]) -> None:
    """Every destination is a wallet of the caller's in the order's currency (404 or 400 naming the order
    otherwise), asked of each wallet's shard in its next tick, all at once; nothing is stored before."""
    wanted = {order.destination for order in orders}
    for i, order in enumerate(orders):
        if ids.parse(order.destination, "wal") is None:
            raise ApiError.not_found(f"orders[{i}][destination]", order.destination)
    found = dict(zip(wanted, await asyncio.gather(*(_lookup(shards, w) for w in wanted)), strict=True))
    for i, order in enumerate(orders):
        wallet = found[order.destination]
        if wallet.merchant_id != caller.merchant_id:
            raise ApiError.not_found(f"orders[{i}][destination]", order.destination)
        if wallet.currency != order.currency:
            raise ApiError.currency_mismatch(
                f"'orders[{i}][currency]' is {order.currency} but wallet {order.destination} holds {wallet.currency}."
            )


async def _lookup(shards: Shards, wallet_id: str) -> ledger.Found:
    slot = ids.parse(wallet_id, "wal")
    assert slot is not None
    shard = shards.index_of(slot)
    return await on_shard(shard, shards.ticks[shard].lookup(wallet_id))


async def place(shards: Shards, payment_id: str, orders: list[dict[str, Any]]) -> bool:
    """Put each order on its destination's shard (each at most once, however often this runs), then mark the
    payment placed. False if a shard could not take them now: the sweeper tries again."""
    by_shard: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for order in orders:
        by_shard[shards.index_of(_slot(order["id"], "po"))].append(order)
    placed = await asyncio.gather(
        *(on_shard(shard, payments.place(shards.pool(shard), group)) for shard, group in by_shard.items()),
        return_exceptions=True,
    )
    if any(isinstance(result, ApiError) for result in placed):
        return False
    for result in placed:
        if isinstance(result, BaseException):
            raise result
    home = shards.index_of(_slot(payment_id, "pay"))
    try:
        await on_shard(home, payments.mark_materialized(shards.pool(home), payment_id))
    except ApiError:
        return False
    return True


def _slot(object_id: str, prefix: str) -> int:
    slot = ids.parse(object_id, prefix)
    assert slot is not None, f"stored id {object_id!r} is malformed"
    return slot


async def get(shards: Shards, caller: Caller, payment_id: str) -> Outcome:
    slot = ids.parse(payment_id, "pay")
    if slot is None:
        raise ApiError.not_found(None, payment_id)
    home = shards.index_of(slot)
    row = await on_shard(home, payments.payment(shards.pool(home), payment_id))
    if row is None or row["merchant_id"] != caller.merchant_id:
        raise ApiError.not_found(None, payment_id)
    return Outcome.of(200, render.payment(row, await _orders_now(shards, orjson.loads(row["orders"]))))


async def _orders_now(shards: Shards, copies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each order as its shard has it; as the payment's copy ('processing') if it is not placed yet, or its shard
    cannot say right now."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for order in copies:
        by_shard[shards.index_of(_slot(order["id"], "po"))].append(order["id"])
    read = await asyncio.gather(
        *(on_shard(shard, payments.orders(shards.pool(shard), wanted)) for shard, wanted in by_shard.items()),
        return_exceptions=True,
    )
    rows: dict[str, asyncpg.Record] = {}
    for result in read:
        if isinstance(result, ApiError):
            continue
        if isinstance(result, BaseException):
            raise result
        rows.update((row["id"], row) for row in result)
    return [render.payment_order(rows.get(order["id"], order)) for order in copies]
