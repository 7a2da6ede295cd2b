"""Payments end to end: a checkout on the PSP's hosted page, a payment of several orders across shards, each
order charged once and credited once, the payment's status following its orders."""

from __future__ import annotations

import asyncio
import time

import httpx

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, audit_clean, new_wallet
from tests.integration.payments.flows import DECLINED_CARD, final, order, pay, payment_method, wallet


async def test_a_payment_credits_each_order_once(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient, settings: Settings
) -> None:
    first, second = await new_wallet(client, shards, shard=0), await new_wallet(client, shards, shard=3)
    method = await payment_method(client)
    created = await pay(client, method, order(first, 1000), order(second, 250), order(first, 5))
    assert created["status"] == "processing" and [o["status"] for o in created["orders"]] == ["processing"] * 3
    done = await final(client, f"/v1/payments/{created['id']}")
    assert done["status"] == "succeeded", done
    assert (await wallet(client, first))["available"] == 1005
    assert (await wallet(client, second))["available"] == 250
    assert (await wallet(client, first))["pending"] == 0
    charged = (await sim.get("/sim/records", params={"type": "charge"})).json()["data"]
    mine = [r for r in charged if r["reference"] in {o["id"] for o in created["orders"]}]
    assert len(mine) == 3 and len({r["idempotency_key"] for r in mine}) == 3
    await audit_clean(settings)


async def test_a_declined_card_fails_its_orders_and_moves_nothing(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient, settings: Settings
) -> None:
    target = await new_wallet(client, shards)
    method = await payment_method(client, DECLINED_CARD)
    created = await pay(client, method, order(target, 700))
    done = await final(client, f"/v1/payments/{created['id']}")
    assert done["status"] == "failed" and done["orders"][0]["failure_code"] == "card_declined", done
    assert (await wallet(client, target))[("available")] == 0
    assert (await wallet(client, target))["pending"] == 0
    await audit_clean(settings)


async def test_queued_work_wakes_an_idle_executor_at_once(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, env: dict[str, str]
) -> None:
    """With polling every 30 s, only the notification the queueing transaction sends can wake the executor."""
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    executor.stop()
    executor.start(SHARDPAY_EXECUTOR_POLL="30")
    try:
        await asyncio.sleep(2.0)  # listening on every shard, and past its first poll
        started = time.monotonic()
        created = await pay(client, method, order(target, 11))
        done = await final(client, f"/v1/payments/{created['id']}", within=10)
        assert done["status"] == "succeeded" and time.monotonic() - started < 5
    finally:
        executor.stop()
        executor.start()
