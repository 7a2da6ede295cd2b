"""Idempotency keys at the simulator, raced for real: one key is carried out once, however many calls carry it;
refunds of one charge never exceed what it captured, however many run at once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from psp.base import Psp, PspRejected
from tests.conftest import key
from tests.integration.psp.flows import pay, records


async def test_same_key_twice_is_one_charge_carried_by_two_calls(adapter: Psp, http: httpx.AsyncClient) -> None:
    payment_method = await pay(adapter)
    idem = key()
    first = await adapter.charge(payment_method, 900, "USD", "po_twice", idem)
    again = await adapter.charge(payment_method, 900, "USD", "po_twice", idem)
    assert first == again
    [record] = await records(http, type="charge")
    assert (record["id"], record["idempotency_key"], record["calls"]) == (first.id, idem, 2)
    raw = await http.post("/v1/charges", json={"payment_method": payment_method, "amount": 900, "currency": "USD",
                                               "reference": "po_twice"}, headers={"Idempotency-Key": idem})  # fmt: skip
    assert raw.headers["idempotent-replayed"] == "true" and raw.json()["id"] == first.id


async def test_fifty_concurrent_calls_with_one_key_make_one_charge(adapter: Psp, http: httpx.AsyncClient) -> None:
    payment_method = await pay(adapter)
    idem = key()
    charges = await asyncio.gather(*(adapter.charge(payment_method, 321, "USD", "po_race", idem) for _ in range(50)))
    assert len({c.id for c in charges}) == 1
    [record] = await records(http, type="charge")
    assert record["calls"] == 50 and record["amount"] == 321


async def test_same_key_other_parameters_is_refused_and_changes_nothing(adapter: Psp, http: httpx.AsyncClient) -> None:
    payment_method = await pay(adapter)
    idem = key()
    await adapter.charge(payment_method, 100, "USD", "po_k", idem)
    for amount, currency, reference in ((101, "USD", "po_k"), (100, "EUR", "po_k"), (100, "USD", "po_other")):
        with pytest.raises(PspRejected) as refused:
            await adapter.charge(payment_method, amount, currency, reference, idem)
        assert refused.value.status == 400 and refused.value.code == "idempotency_key_reused"
    raw = await http.post("/v1/charges", json={"payment_method": payment_method, "amount": 5, "currency": "USD",
                                               "reference": "po_k"}, headers={"Idempotency-Key": idem})  # fmt: skip
    assert raw.json()["error"]["type"] == "idempotency_error"
    [record] = await records(http, type="charge")
    assert record["amount"] == 100 and record["calls"] == 5


async def test_a_key_is_per_endpoint(adapter: Psp, http: httpx.AsyncClient) -> None:
    idem = key()
    charge = await adapter.charge(await pay(adapter), 100, "USD", "po_e", idem)
    refund = await adapter.refund(charge.id, 100, "re_e", idem)
    payout = await adapter.payout(100, "USD", "ba_e", "out_e", idem)
    assert {r["type"] for r in await records(http)} == {"charge", "refund", "payout"}
    assert refund.charge == charge.id and payout.status == "paid"


async def test_twenty_concurrent_refunds_never_exceed_the_captured_amount(
    adapter: Psp, http: httpx.AsyncClient
) -> None:
    charge = await adapter.charge(await pay(adapter), 1000, "USD", "po_refunds", key())
    results = await asyncio.gather(*(adapter.refund(charge.id, 150, f"re_{n}", key()) for n in range(20)),
                                   return_exceptions=True)  # fmt: skip
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, PspRejected)]
    assert len(succeeded) == 6 and len(refused) == 14
    assert all(r.code == "amount_too_large" for r in refused)
    refunds = await records(http, type="refund")
    assert sum(r["amount"] for r in refunds if r["status"] == "succeeded") == 900
    [captured] = await records(http, type="charge")
    assert captured["amount_refunded"] == 900
