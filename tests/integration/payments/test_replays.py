"""Money in and out is idempotent like every POST: the same key replays, other parameters get 422, even after
Redis lost every key; pending shows orders on their way in; every state change is an event."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import redis.asyncio as aioredis

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, key, new_wallet, post
from tests.integration.payments.flows import final, order, paid_order, pay, payment_method, wallet


async def _types(shards: Shards, *object_ids: str) -> set[str]:
    found: set[str] = set()
    for pool in shards.pools:
        rows = await pool.fetch(
            "SELECT type FROM outbox WHERE (body::jsonb -> 'data' -> 'object' ->> 'id') = ANY($1::text[])",
            list(object_ids),
        )
        found.update(row["type"] for row in rows)
    return found


async def test_same_key_replays_other_parameters_422_even_after_redis_forgot(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, settings: Settings
) -> None:
    target = await new_wallet(client, shards, funds=1000)
    method = await payment_method(client)
    redis = aioredis.Redis.from_url(settings.redis_url)
    writes: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("/v1/payments", {"payment_method": method, "orders": [order(target, 40)]},
         {"payment_method": method, "orders": [order(target, 41)]}),
        ("/v1/payouts", {"source": target, "amount": 30, "currency": "USD", "destination": "ba_1"},
         {"source": target, "amount": 31, "currency": "USD", "destination": "ba_1"}),
        ("/v1/refunds", {"payment_order": await paid_order(client, target, 100), "amount": 10},
         {"payment_order": await paid_order(client, target, 100), "amount": 10}),
    ]  # fmt: skip
    try:
        for path, body, other in writes:
            idem = key()
            first = await post(client, path, body, idem)
            assert first.status_code == 201, first.text
            again = await post(client, path, body, idem)
            assert (again.status_code, again.json()) == (201, first.json())
            assert again.headers["Idempotent-Replayed"] == "true"
            await redis.flushdb()
            after_flush = await post(client, path, body, idem)
            assert (after_flush.status_code, after_flush.json()) == (201, first.json()), after_flush.text
            await redis.flushdb()
            reused = await post(client, path, other, idem)
            assert reused.status_code == 422, reused.text
    finally:
        await redis.aclose()


async def test_concurrent_payments_with_one_key_store_one(
    client: httpx.AsyncClient, shards: Shards, executor: Executor
) -> None:
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    idem = key()
    answers = await asyncio.gather(*(post(client, "/v1/payments", {"payment_method": method,
                                                                   "orders": [order(target, 9)]}, idem)
                                     for _ in range(20)))  # fmt: skip
    ok = [a for a in answers if a.status_code == 201]
    assert ok and {a.status_code for a in answers} <= {201, 409}
    assert len({a.json()["id"] for a in ok}) == 1
    await final(client, f"/v1/payments/{ok[0].json()['id']}")
    assert (await wallet(client, target))["available"] == 9


async def test_pending_shows_orders_on_their_way_in_and_every_change_is_an_event(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient
) -> None:
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    assert (await sim.put("/sim/faults", json={"latency_ms": 800})).status_code == 200
    created = await pay(client, method, order(target, 60), order(target, 40))
    assert (await wallet(client, target))["pending"] == 100
    assert (await sim.put("/sim/faults", json={"latency_ms": 0})).status_code == 200
    await final(client, f"/v1/payments/{created['id']}")
    got = await wallet(client, target)
    assert (got["available"], got["pending"]) == (100, 0)
    order_ids = [o["id"] for o in created["orders"]]
    refund = await post(client, "/v1/refunds", {"payment_order": order_ids[0], "amount": 5})
    payout = await post(client, "/v1/payouts", {"source": target, "amount": 20, "currency": "USD",
                                                "destination": "ba_ok"})  # fmt: skip
    await final(client, f"/v1/refunds/{refund.json()['id']}")
    await final(client, f"/v1/payouts/{payout.json()['id']}")
    types = await _types(shards, created["id"], *order_ids, refund.json()["id"], payout.json()["id"])
    assert types == {"payment.created", "payment.succeeded", "payment_order.succeeded", "refund.created",
                     "refund.succeeded", "payout.created", "payout.paid"}, types  # fmt: skip
