"""A PSP outage: the charge breaker opens and calls stop, orders wait in 'processing', /readyz says degraded and
/metrics shows the breaker; once the PSP is back a probe closes the breaker and the waiting work completes."""

from __future__ import annotations

import asyncio
import time

import httpx

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, audit_clean, new_wallet
from tests.integration.payments.flows import final, order, pay, payment_method


async def _charge_calls(sim: httpx.AsyncClient) -> int:
    endpoints = (await sim.get("/sim/stats")).json()["endpoints"]
    return sum(endpoints.get("POST /v1/charges", {}).get("answers", {}).values())


async def _until(check: object, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.1)


async def test_an_outage_opens_the_breaker_and_the_work_completes_after_it(
    gateway: str, client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient,
    settings: Settings,
) -> None:  # fmt: skip
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    assert (await sim.put("/sim/faults", json={"outage": True})).status_code == 200
    created = [await pay(client, method, order(target, 100)) for _ in range(12)]

    async def degraded() -> bool:
        ready = (await client.get("/readyz")).json()
        return ready["status"] == "degraded" and ready["details"]["psp"].get("charge") in ("open", "half_open")

    await _until(degraded)
    ready = await client.get("/readyz")
    assert ready.status_code == 200  # degraded, not down: transfers keep working
    assert 'shardpay_psp_breaker_state{operation="charge"}' in (await client.get("/metrics")).text
    before = await _charge_calls(sim)
    await asyncio.sleep(3.0)
    # Open, the breaker lets through one probe per cooldown (1 s here), where twelve orders retrying with a
    # backoff capped at 1 s would make about twelve calls a second.
    assert await _charge_calls(sim) - before <= 5
    statuses = {(await client.get(f"/v1/payments/{p['id']}")).json()["status"] for p in created}
    assert statuses == {"processing"}  # waiting, not failed
    assert (await sim.put("/sim/faults", json={"outage": False})).status_code == 200
    done = await asyncio.gather(*(final(client, f"/v1/payments/{p['id']}", within=30) for p in created))
    assert {d["status"] for d in done} == {"succeeded"}

    async def closed() -> bool:
        return (await client.get("/readyz")).json()["details"]["psp"].get("charge") == "closed"

    await _until(closed)
    await audit_clean(settings)
