"""A day's traffic for the reconciliation tests: payments, refunds and payouts through the gateway, the PSP
simulator and the executor, and what each record looks like in its shard afterwards."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from shardpay import ids
from shards.pools import Shards
from tests.conftest import post
from tests.integration.payments.flows import GOOD_CARD, final, order, pay, payment_method

_PREFIX = {"po": "po", "re": "re", "out": "out"}
# A charge or payout answers 'pending', settles 0.3 s later, and its webhook is dropped: shardpay never hears.
LOST_WEBHOOKS = {"pending_rate": 1, "settle_after_ms": 300, "webhook_drop_rate": 1}


def shard_of(shards: Shards, object_id: str) -> int:
    prefix = object_id.split("_", 1)[0]
    slot = ids.parse(object_id, _PREFIX[prefix])
    assert slot is not None, object_id
    return shards.index_of(slot)


async def paid_order(client: httpx.AsyncClient, wallet: str, amount: int, card: str = GOOD_CARD) -> tuple[str, str]:
    """(payment id, order id) of a payment of one order, once it is final."""
    created = await pay(client, await payment_method(client, card), order(wallet, amount))
    done = await final(client, f"/v1/payments/{created['id']}")
    return created["id"], done["orders"][0]["id"]


async def unfinished_order(client: httpx.AsyncClient, shards: Shards, wallet: str, amount: int,
                           card: str = GOOD_CARD) -> tuple[str, str]:  # fmt: skip
    """(payment id, order id) of a payment whose charge the PSP answered 'pending' (with LOST_WEBHOOKS set)."""
    created = await pay(client, await payment_method(client, card), order(wallet, amount))
    order_id: str = created["orders"][0]["id"]
    await until_work_state(shards, order_id, "pending")
    return created["id"], order_id


async def payout(client: httpx.AsyncClient, source: str, amount: int, bank: str = "ba_good") -> str:
    created = await post(client, "/v1/payouts", {"source": source, "amount": amount, "currency": "USD",
                                                 "destination": bank})  # fmt: skip
    assert created.status_code == 201, created.text
    payout_id: str = created.json()["id"]
    return payout_id


async def refund(client: httpx.AsyncClient, order_id: str, amount: int) -> str:
    created = await post(client, "/v1/refunds", {"payment_order": order_id, "amount": amount})
    assert created.status_code == 201, created.text
    refund_id: str = created.json()["id"]
    await final(client, f"/v1/refunds/{refund_id}")
    return refund_id


async def until_work_state(shards: Shards, object_id: str, state: str, within: float = 20.0) -> None:
    pool = shards.pool(shard_of(shards, object_id))
    deadline = time.monotonic() + within
    while await pool.fetchval("SELECT psp_state FROM psp_work WHERE id = $1", object_id) != state:
        assert time.monotonic() < deadline, f"{object_id}'s work never became {state!r}"
        await asyncio.sleep(0.05)


async def until_settled_at_psp(sim: httpx.AsyncClient, reference: str, within: float = 20.0) -> dict[str, Any]:
    """The simulator's record of ``reference`` once it is final there."""
    deadline = time.monotonic() + within
    while True:
        found = (await sim.get("/sim/records", params={"reference": reference})).json()["data"]
        if found and found[0]["status"] != "pending":
            record: dict[str, Any] = found[0]
            return record
        assert time.monotonic() < deadline, f"{reference} never settled at the PSP"
        await asyncio.sleep(0.05)


async def status_of(shards: Shards, object_id: str) -> str:
    table = {"po": "payment_orders", "re": "refunds", "out": "payouts"}[object_id.split("_", 1)[0]]
    status: str = await shards.pool(shard_of(shards, object_id)).fetchval(
        f"SELECT status FROM {table} WHERE id = $1", object_id
    )
    return status


async def ledger_txns(shards: Shards, object_id: str, kind: str) -> int:
    found: int = await shards.pool(shard_of(shards, object_id)).fetchval(
        "SELECT count(DISTINCT txn_id) FROM ledger_entries WHERE ref = $1 AND kind = $2", object_id, kind
    )
    return found


async def events(shards: Shards, object_id: str, event_type: str) -> int:
    """Outbox events of ``event_type`` about ``object_id`` (what the merchant's webhooks are sent from)."""
    found: int = await shards.pool(shard_of(shards, object_id)).fetchval(
        "SELECT count(*) FROM outbox WHERE type = $1 AND body::jsonb -> 'data' -> 'object' ->> 'id' = $2",
        event_type, object_id,
    )  # fmt: skip
    return found


async def fee_booked(shards: Shards, object_id: str) -> int | None:
    found: int | None = await shards.pool(shard_of(shards, object_id)).fetchval(
        "SELECT amount FROM settlement_fees WHERE reference = $1", object_id
    )
    return found
