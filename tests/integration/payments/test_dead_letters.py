"""Work that cannot finish lands in the dead-letter queue with its reason, waits there (never failed by a PSP
bug), and ``shardpay dlq replay`` puts it back, safely; the sweeper finishes what a gateway left half done."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson

from shardpay import ids
from shardpay.config import Settings
from shardpay.domain.events import render_event
from shardpay.services import render
from shards import payments
from shards.pools import Shards
from tests.conftest import Executor, StackMerchant, audit_clean, key, new_wallet
from tests.integration.payments.flows import final, order, pay, payment_method, wallet


async def dlq(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    command = [sys.executable, "-m", "shardpay", "dlq", *args]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, timeout=60)
    return done.returncode, orjson.loads(done.stdout or done.stderr)


async def test_a_malformed_answer_is_dead_lettered_and_replayed_once_fixed(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient, env: dict[str, str],
    settings: Settings,
) -> None:  # fmt: skip
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    assert (await sim.put("/sim/faults", json={"malformed_rate": 1})).status_code == 200
    created = await pay(client, method, order(target, 250))
    order_id = created["orders"][0]["id"]
    deadline = time.monotonic() + 15
    while not any(d["id"] == order_id for d in (await dlq(env, "list"))[1]["data"]):
        assert time.monotonic() < deadline, "never dead-lettered"
        await asyncio.sleep(0.1)
    dead = next(d for d in (await dlq(env, "list"))[1]["data"] if d["id"] == order_id)
    assert dead["kind"] == "charge" and "malformed" in dead["reason"] and dead["attempts"] == 3, dead
    assert (await client.get(f"/v1/payments/{created['id']}")).json()["status"] == "processing"  # waits, not failed
    assert (await wallet(client, target))["pending"] == 250
    assert (await sim.put("/sim/faults", json={"malformed_rate": 0})).status_code == 200
    code, replayed = await dlq(env, "replay", order_id)
    assert code == 0 and replayed["replayed"] == [order_id], replayed
    done = await final(client, f"/v1/payments/{created['id']}")
    assert done["status"] == "succeeded"
    code, again = await dlq(env, "replay", order_id)
    assert code == 1 and "not dead-lettered" in again["error"]  # replaying twice does nothing
    assert (await dlq(env, "replay", "--all"))[1]["count"] == 0
    charged = (await sim.get("/sim/records", params={"reference": order_id})).json()["data"]
    assert len(charged) == 1
    await audit_clean(settings)


async def test_the_sweeper_places_orders_a_gateway_never_placed(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, merchant: StackMerchant, settings: Settings
) -> None:
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    # What a gateway does before it places the orders, and then it stops (a crash between the two).
    slot = ids.slot_for(merchant.id, key())
    payment_id, order_id = ids.new_id("pay", slot), ids.new_id("po", ids.parse(target, "wal") or 0)
    placed = {"id": order_id, "payment_id": payment_id, "merchant_id": merchant.id, "destination": target,
              "amount": 77, "currency": "USD", "reference": None, "payment_method": method, "request_id": "req_t",
              "created": int(time.time())}  # fmt: skip
    obj = render.payment({"id": payment_id, "payment_method": method, "created": 1}, [render.payment_order(placed)])
    event_id, event_body = render_event("payment.created", merchant.id, "req_t", obj, slot)
    home = shards.pool(shards.index_of(slot))
    applied = await payments.create(home, payments.NewPayment(
        merchant.id, key(), "fp", payment_id, method, [placed], "req_t", 1, orjson.dumps(obj).decode(), event_id,
        event_body))  # fmt: skip
    assert applied.outcome == "applied"
    done = await final(client, f"/v1/payments/{payment_id}", within=20)
    assert done["status"] == "succeeded" and (await wallet(client, target))["available"] == 77
    await audit_clean(settings)
