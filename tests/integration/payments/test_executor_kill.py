"""``kill -9`` of an executor in the middle of a charge: the order completes once, by asking the PSP, with no
second charge."""

from __future__ import annotations

import asyncio
import time

import httpx

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, audit_clean, new_wallet
from tests.integration.payments.flows import final, order, pay, payment_method, wallet


async def test_a_killed_executors_charge_is_resolved_by_lookup(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient, settings: Settings
) -> None:
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    # The PSP does every call at once and then holds its answer for 10 s: the executor is killed while it waits.
    # Its webhooks are lost, so only the executor can learn what became of the charge.
    faults = {"timeout_after_commit_rate": 1, "timeout_hold_ms": 10_000, "webhook_drop_rate": 1}
    assert (await sim.put("/sim/faults", json=faults)).status_code == 200
    created = await pay(client, method, order(target, 321))
    order_id = created["orders"][0]["id"]
    await asyncio.sleep(0.5)  # the executor has claimed the order, and the PSP has charged it
    executor.kill()
    killed_at = time.monotonic()
    try:
        deadline = time.monotonic() + 10
        while not (charged := (await sim.get("/sim/records", params={"reference": order_id})).json()["data"]):
            assert time.monotonic() < deadline, "the killed executor's charge never reached the PSP"
            await asyncio.sleep(0.1)
        assert (await client.get(f"/v1/payments/{created['id']}")).json()["status"] == "processing"
        assert (await sim.put("/sim/faults", json={"timeout_after_commit_rate": 0})).status_code == 200
    finally:
        executor.start()
    done = await final(client, f"/v1/payments/{created['id']}", within=30)
    assert done["status"] == "succeeded"
    assert time.monotonic() - killed_at >= settings.psp_lease - 1  # it waited out the dead worker's lease
    charged = (await sim.get("/sim/records", params={"reference": order_id})).json()["data"]
    assert len(charged) == 1 and charged[0]["calls"] == 1, charged  # one charge, made by the killed executor
    assert (await wallet(client, target))["available"] == 321
    await audit_clean(settings)
