"""The PSP's webhooks at shardpay: verified, applied exactly once, racing safely with the executor's own answer."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from events.signing import sign
from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, audit_clean, new_wallet
from tests.integration.payments.flows import final, order, pay, payment_method, wallet


def _event(order_id: str, status: str = "succeeded", charge: str = "ch_crafted") -> bytes:
    obj = {"id": charge, "object": "charge", "status": status, "failure_code": None if status == "succeeded"
           else "card_declined", "amount": 500, "currency": "USD", "reference": order_id, "payment_method": "pm_x",
           "created": int(time.time())}  # fmt: skip
    return orjson.dumps({"id": f"pspevt_{charge}", "type": f"charge.{status}", "created": int(time.time()),
                         "data": {"object": obj}})  # fmt: skip


async def _send(gateway: str, body: bytes, secret: str, t: int | None = None, tamper: bool = False) -> httpx.Response:
    header = sign(secret, body, int(time.time()) if t is None else t)
    if tamper:
        header = header[:-4] + "0000"
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as http:
        return await http.post("/v1/webhooks/psp", content=body, headers={"PSP-Signature": header})


async def _processing_order(client: httpx.AsyncClient, shards: Shards, amount: int = 500) -> tuple[str, dict[str, Any]]:
    target = await new_wallet(client, shards)
    created = await pay(client, await payment_method(client), order(target, amount))
    return target, created


async def test_forged_and_stale_webhooks_change_nothing(
    gateway: str, client: httpx.AsyncClient, shards: Shards, executor: Executor, settings: Settings
) -> None:
    executor.stop()  # nobody else decides the order meanwhile
    try:
        target, created = await _processing_order(client, shards)
        body = _event(created["orders"][0]["id"])
        for response in (
            await _send(gateway, body, settings.psp_webhook_secret, tamper=True),
            await _send(gateway, body, "whsec_someone_else"),
            await _send(gateway, body, settings.psp_webhook_secret, t=int(time.time()) - 301),
            await _send(gateway, body, ""),
        ):
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "signature_invalid"
        async with httpx.AsyncClient(base_url=gateway) as http:
            unsigned = await http.post("/v1/webhooks/psp", content=body)
        assert unsigned.status_code == 400
        assert (await wallet(client, target))["pending"] == 500
        assert (await client.get(f"/v1/payments/{created['id']}")).json()["status"] == "processing"
    finally:
        executor.start()
    await final(client, f"/v1/payments/{created['id']}")


async def test_a_webhook_before_the_executor_decides_and_the_executor_changes_nothing(
    gateway: str, client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient,
    settings: Settings,
) -> None:  # fmt: skip
    executor.stop()
    try:
        target, created = await _processing_order(client, shards)
        order_id = created["orders"][0]["id"]
        first = await _send(gateway, _event(order_id), settings.psp_webhook_secret)
        assert first.status_code == 200 and first.json()["result"] == "applied", first.text
        again = await _send(gateway, _event(order_id), settings.psp_webhook_secret)  # replayed
        assert again.status_code == 200 and again.json()["result"] == "already_final", again.text
        other = await _send(gateway, _event(order_id, "failed", "ch_other"), settings.psp_webhook_secret)
        assert other.json()["result"] == "already_final"  # a later, contrary event changes nothing either
    finally:
        executor.start()
    done = await final(client, f"/v1/payments/{created['id']}")
    assert done["status"] == "succeeded"
    assert (await wallet(client, target))["available"] == 500
    charged = (await sim.get("/sim/records", params={"reference": order_id})).json()["data"]
    assert charged == []  # the webhook decided it first: the executor found no work left
    await audit_clean(settings)


async def test_the_psps_own_webhook_after_the_executor_changes_nothing(
    gateway: str, client: httpx.AsyncClient, shards: Shards, executor: Executor, sim: httpx.AsyncClient,
    settings: Settings,
) -> None:  # fmt: skip
    target, created = await _processing_order(client, shards)
    order_id = created["orders"][0]["id"]
    await final(client, f"/v1/payments/{created['id']}")
    charge = (await sim.get("/sim/records", params={"reference": order_id})).json()["data"][0]
    late = await _send(gateway, _event(order_id, charge=charge["id"]), settings.psp_webhook_secret)
    assert late.status_code == 200 and late.json()["result"] == "already_final", late.text
    assert (await wallet(client, target))["available"] == 500
    await audit_clean(settings)


async def test_an_event_about_nothing_of_ours_is_acknowledged(gateway: str, settings: Settings) -> None:
    for body in (_event("po_" + "0" * 24), _event("not-an-id")):
        response = await _send(gateway, body, settings.psp_webhook_secret)
        assert response.status_code == 200 and response.json()["result"] == "unknown_reference", response.text
    unknown_type = orjson.dumps({"id": "pspevt_1", "type": "charge.captured_twice", "created": 1,
                                 "data": {"object": {}}})  # fmt: skip
    response = await _send(gateway, unknown_type, settings.psp_webhook_secret)
    assert response.status_code == 200 and response.json()["result"] == "ignored", response.text
    malformed = orjson.dumps({"id": "pspevt_2", "type": "charge.dispute.created", "created": 1, "data": {"object": {}}})
    response = await _send(gateway, malformed, settings.psp_webhook_secret)
    assert response.status_code == 400 and response.json()["error"]["code"] == "webhook_invalid", response.text
