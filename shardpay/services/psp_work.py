"""What each kind of PSP work does: a charge for a payment order, a payout, a refund.

Each kind knows how to read its rows, ask the PSP what became of an earlier call (by idempotency key: the
object's own id), make the call, and make the outcome final in the shards. Finishing is the same function
whoever learns the outcome first, the executor from the PSP's answer or the gateway from the PSP's webhook:
the first decides, the second changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import orjson

import psp
from shardpay import ids
from shardpay.domain.events import render_event
from shardpay.services import render
from shards import outflows, payments
from shards.errors import on_shard
from shards.pools import Shards


@dataclass(frozen=True)
class Outcome:
    """What the PSP says of one piece of work: final ('succeeded', 'paid', 'failed') or 'pending'."""

    status: str
    psp_id: str | None = None
    failure_code: str | None = None

    @property
    def final(self) -> bool:
        return self.status != "pending"


def _outcome(obj: Any) -> Outcome:
    return Outcome(obj.status, obj.id, obj.failure_code)


class Kind(Protocol):
    name: str  # the psp_work kind
    operation: str  # the PSP operation, and its circuit breaker

    async def rows(self, pool: asyncpg.Pool, work_ids: Sequence[str]) -> dict[str, asyncpg.Record]: ...
    async def lookup(self, client: psp.Psp, row: asyncpg.Record) -> Outcome | None: ...
    async def call(self, client: psp.Psp, row: asyncpg.Record) -> Outcome: ...
    async def finish(self, shards: Shards, row: asyncpg.Record, outcome: Outcome) -> bool: ...


def _slot(object_id: str, prefix: str) -> int:
    slot = ids.parse(object_id, prefix)
    assert slot is not None, f"stored id {object_id!r} is malformed"
    return slot


class Charge:
    name, operation = "charge", "charge"

    async def rows(self, pool: asyncpg.Pool, work_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
        return {row["id"]: row for row in await payments.orders(pool, work_ids)}

    async def lookup(self, client: psp.Psp, row: asyncpg.Record) -> Outcome | None:
        found = await client.find_charge(row["id"], request_id=row["request_id"])
        return None if found is None else _outcome(found)

    async def call(self, client: psp.Psp, row: asyncpg.Record) -> Outcome:
        return _outcome(await client.charge(row["payment_method"], row["amount"], row["currency"], row["id"],
                                            key=row["id"], request_id=row["request_id"]))  # fmt: skip

    async def finish(self, shards: Shards, row: asyncpg.Record, outcome: Outcome) -> bool:
        return await finish_order(shards, row, outcome)


async def finish_order(shards: Shards, row: asyncpg.Record, outcome: Outcome) -> bool:
    """The order's outcome and its credit (one transaction on its shard), then its payment's (on the payment's
    home shard). True if this call decided the order."""
    slot = _slot(row["id"], "po")
    shard = shards.index_of(slot)
    status = "succeeded" if outcome.status == "succeeded" else "failed"
    obj = render.payment_order(row, status, outcome.failure_code)
    event_id, body = render_event(f"payment_order.{status}", row["merchant_id"], row["request_id"], obj, slot)
    done = await on_shard(shard, payments.finish_order(
        shards.pool(shard), row["id"], status, outcome.psp_id, outcome.failure_code, event_id, body))  # fmt: skip
    # Reported by whoever decided it; by a later caller only if it had not been (its decider stopped in between).
    if done.status in ("succeeded", "failed") and (done.applied or not row["reported"]):
        await report(shards, row["id"], row["payment_id"], done.status)
    return done.applied


async def report(shards: Shards, order_id: str, payment_id: str, status: str) -> None:
    """An order's final outcome to its payment's home shard (once, however often it is sent), then marked sent."""
    home = shards.index_of(_slot(payment_id, "pay"))

    def event(payment: asyncpg.Record, results: dict[str, str]) -> tuple[str, str]:
        orders = [render.payment_order(o, results[o["id"]]) for o in orjson.loads(payment["orders"])]
        obj = render.payment(payment, orders)
        return render_event(f"payment.{obj['status']}", payment["merchant_id"], payment["request_id"], obj,
                            _slot(payment["id"], "pay"))  # fmt: skip

    await on_shard(home, payments.record_result(shards.pool(home), order_id, payment_id, status, event))
    shard = shards.index_of(_slot(order_id, "po"))
    await on_shard(shard, payments.mark_reported(shards.pool(shard), order_id))


class Payout:
    name, operation = "payout", "payout"

    async def rows(self, pool: asyncpg.Pool, work_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
        rows = await pool.fetch("SELECT * FROM payouts WHERE id = ANY($1::text[])", list(work_ids))
        return {row["id"]: row for row in rows}

    async def lookup(self, client: psp.Psp, row: asyncpg.Record) -> Outcome | None:
        found = await client.find_payout(row["id"], request_id=row["request_id"])
        return None if found is None else _outcome(found)

    async def call(self, client: psp.Psp, row: asyncpg.Record) -> Outcome:
        return _outcome(await client.payout(row["amount"], row["currency"], row["destination"], row["id"],
                                            key=row["id"], request_id=row["request_id"]))  # fmt: skip

    async def finish(self, shards: Shards, row: asyncpg.Record, outcome: Outcome) -> bool:
        status = "paid" if outcome.status == "paid" else "failed"
        return await _finish_outflow(shards, "payout", "out", row, status, outcome, render.payout)


class Refund:
    name, operation = "refund", "refund"

    async def rows(self, pool: asyncpg.Pool, work_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
        rows = await pool.fetch(
            "SELECT r.*, o.psp_charge_id FROM refunds r JOIN payment_orders o ON o.id = r.payment_order "
            "WHERE r.id = ANY($1::text[])",
            list(work_ids),
        )
        return {row["id"]: row for row in rows}

    async def lookup(self, client: psp.Psp, row: asyncpg.Record) -> Outcome | None:
        found = await client.find_refund(row["id"], request_id=row["request_id"])
        return None if found is None else _outcome(found)

    async def call(self, client: psp.Psp, row: asyncpg.Record) -> Outcome:
        return _outcome(await client.refund(row["psp_charge_id"], row["amount"], row["id"], key=row["id"],
                                            request_id=row["request_id"]))  # fmt: skip

    async def finish(self, shards: Shards, row: asyncpg.Record, outcome: Outcome) -> bool:
        status = "succeeded" if outcome.status == "succeeded" else "failed"
        return await _finish_outflow(shards, "refund", "re", row, status, outcome, render.refund)


async def _finish_outflow(
    shards: Shards, kind: str, prefix: str, row: asyncpg.Record, status: str, outcome: Outcome, draw: Any,
) -> bool:  # fmt: skip
    slot = _slot(row["id"], prefix)
    shard = shards.index_of(slot)
    obj = draw(row, status, outcome.failure_code)
    event_id, body = render_event(f"{kind}.{status}", row["merchant_id"], row["request_id"], obj, slot)
    _, applied = await on_shard(shard, outflows.finish(
        shards.pool(shard), kind, row["id"], status, outcome.psp_id, outcome.failure_code, event_id, body))  # fmt: skip
    return applied


KINDS: dict[str, Kind] = {kind.name: kind for kind in (Charge(), Payout(), Refund())}
