"""A PSP that fails like a real one, on every call: 1,000 payments still end, each order charged once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, audit_clean, new_wallet
from tests.integration.payments.flows import order, pay, payment_method, wallet

CHAOS = {
    "error_rate": 0.2, "timeout_after_commit_rate": 0.1, "reset_rate": 0.05, "pending_rate": 0.2,
    "settle_after_ms": 300, "timeout_hold_ms": 2500, "webhook_duplicate_rate": 0.3, "webhook_reorder": True,
}  # fmt: skip
PAYMENTS = 1000
WITHIN = 180.0  # seconds for every order to be final


@pytest.mark.slow
async def test_a_thousand_payments_through_a_failing_psp_each_order_charged_once(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient, settings: Settings
) -> None:
    wallets = [await new_wallet(client, shards, shard=i % 4) for i in range(12)]
    methods = [await payment_method(client) for _ in range(4)]  # before the faults: a customer's card, saved
    assert (await sim.put("/sim/faults", json=CHAOS)).status_code == 200
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> dict[str, Any]:
        async with gate:
            return await pay(client, methods[i % 4], order(wallets[i % 12], 100 + i % 7))

    created = await asyncio.gather(*(one(i) for i in range(PAYMENTS)))
    orders = {o["id"]: o for p in created for o in p["orders"]}
    statuses = await _all_final(client, [p["id"] for p in created])
    assert set(statuses.values()) == {"succeeded"}, Counter(statuses.values())
    charges = [r for r in (await sim.get("/sim/records", params={"type": "charge"})).json()["data"]
               if r["reference"] in orders]  # fmt: skip
    keys = Counter(r["idempotency_key"] for r in charges)
    assert len(keys) == len(orders) and max(keys.values()) == 1, keys.most_common(3)
    expected = Counter[str]()
    for o in orders.values():
        expected[o["destination"]] += o["amount"]
    for wallet_id in wallets:
        got = await wallet(client, wallet_id)
        assert (got["available"], got["pending"]) == (expected[wallet_id], 0), wallet_id
    await audit_clean(settings)


async def _all_final(client: httpx.AsyncClient, payment_ids: list[str]) -> dict[str, str]:
    deadline = time.monotonic() + WITHIN
    statuses: dict[str, str] = {}
    while True:
        waiting = [p for p in payment_ids if statuses.get(p, "processing") == "processing"]
        for start in range(0, len(waiting), 50):
            got = await asyncio.gather(*(client.get(f"/v1/payments/{p}") for p in waiting[start : start + 50]))
            statuses.update((p, g.json()["status"]) for p, g in zip(waiting[start : start + 50], got, strict=True))
        if "processing" not in statuses.values():
            return statuses
        assert time.monotonic() < deadline, Counter(statuses.values())
        await asyncio.sleep(0.5)
