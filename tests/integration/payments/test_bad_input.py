"""Bad input on every route of money in and out: a clear 4xx naming the parameter, nothing stored, nothing charged."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shards.control import create_merchant
from shards.pools import Shards
from tests.conftest import Executor, StackMerchant, new_wallet, post
from tests.integration.payments.flows import order, paid_order, payment_method

BAD_AMOUNTS: list[Any] = [10.5, 10.0, "10", True, 0, -5, 10**15 + 1, None]


async def _counts(shards: Shards, sim: httpx.AsyncClient) -> tuple[int, int, int, int]:
    tables = [0, 0, 0]
    for pool in shards.pools:
        for i, table in enumerate(("payments", "payouts", "refunds")):
            tables[i] += await pool.fetchval(f"SELECT count(*) FROM {table}")
    charges = len((await sim.get("/sim/records")).json()["data"])
    return tables[0], tables[1], tables[2], charges


@pytest.fixture
async def other(client: httpx.AsyncClient, shards: Shards, gateway: str) -> httpx.AsyncClient:
    made = await create_merchant(shards.control, "someone else", None, 100_000, 100_000)
    return httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {made.api_key}"}, timeout=30)


async def _refused(client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, param: str | None) -> None:
    response = await post(client, path, body)
    assert response.status_code == status, (body, response.text)
    error = response.json()["error"]
    if param is not None:
        assert error["param"] == param, (body, error)


async def test_payments_refuse_bad_input_and_store_and_charge_nothing(
    client: httpx.AsyncClient, other: httpx.AsyncClient, shards: Shards, sim: httpx.AsyncClient,
    executor: Executor, merchant: StackMerchant,
) -> None:  # fmt: skip
    mine, eur = await new_wallet(client, shards), await new_wallet(client, shards, currency="EUR")
    theirs = await new_wallet(other, shards)
    method, their_method = await payment_method(client), await payment_method(other)
    before = await _counts(shards, sim)
    for amount in BAD_AMOUNTS:
        await _refused(client, "/v1/payments", {"payment_method": method, "orders": [
            {"destination": mine, "amount": amount, "currency": "USD"}]}, 400, "orders[0][amount]")  # fmt: skip
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"payment_method": method, "orders": []}, 400, "orders"),
        ({"payment_method": method, "orders": [order(mine, 1)] * 51}, 400, "orders"),
        ({"payment_method": method, "orders": order(mine, 1)}, 400, "orders"),
        ({"payment_method": method}, 400, "orders"),
        ({"orders": [order(mine, 1)]}, 400, "payment_method"),
        ({"payment_method": "card_4242", "orders": [order(mine, 1)]}, 400, "payment_method"),
        ({"payment_method": "pm_" + "x" * 24, "orders": [order(mine, 1)]}, 404, "payment_method"),
        ({"payment_method": their_method, "orders": [order(mine, 1)]}, 404, "payment_method"),
        ({"payment_method": method, "orders": [order(mine, 1), order(theirs, 1)]}, 404, "orders[1][destination]"),
        ({"payment_method": method, "orders": [order("wal_" + "0" * 24, 1)]}, 404, "orders[0][destination]"),
        ({"payment_method": method, "orders": [order("nope", 1)]}, 404, "orders[0][destination]"),
        ({"payment_method": method, "orders": [order(eur, 1)]}, 400, "currency"),
        ({"payment_method": method, "orders": [order(mine, 1, "XXX")]}, 400, "orders[0][currency]"),
        ({"payment_method": method, "orders": [{**order(mine, 1), "tip": 5}]}, 400, "orders[0][tip]"),
        ({"payment_method": method, "orders": ["wal"]}, 400, "orders[0]"),
        ({"payment_method": method, "orders": [order(mine, 1)], "capture": "later"}, 400, "capture"),
    ]
    for body, status, param in cases:
        await _refused(client, "/v1/payments", body, status, param)
    assert await _counts(shards, sim) == before


async def test_payouts_refunds_and_checkouts_refuse_bad_input(
    client: httpx.AsyncClient, other: httpx.AsyncClient, shards: Shards, sim: httpx.AsyncClient, executor: Executor
) -> None:
    source = await new_wallet(client, shards, funds=1000)
    theirs = await new_wallet(other, shards, funds=1000)
    po = await paid_order(client, await new_wallet(client, shards), 500)
    their_po = await paid_order(other, await new_wallet(other, shards), 500)
    before = await _counts(shards, sim)
    payout = {"source": source, "amount": 100, "currency": "USD", "destination": "ba_123"}
    for amount in BAD_AMOUNTS:
        await _refused(client, "/v1/payouts", {**payout, "amount": amount}, 400, "amount")
    cases: list[tuple[str, dict[str, Any], int, str | None]] = [
        ("/v1/payouts", {**payout, "source": theirs}, 404, "source"),
        ("/v1/payouts", {**payout, "source": "wal_" + "0" * 24}, 404, "source"),
        ("/v1/payouts", {**payout, "destination": "iban_DE00"}, 400, "destination"),
        ("/v1/payouts", {**payout, "destination": None}, 400, "destination"),
        ("/v1/payouts", {**payout, "currency": "EUR"}, 400, "currency"),
        ("/v1/payouts", {**payout, "amount": 1001}, 402, "amount"),
        ("/v1/refunds", {"payment_order": their_po}, 404, "payment_order"),
        ("/v1/refunds", {"payment_order": "po_" + "0" * 24}, 404, "payment_order"),
        ("/v1/refunds", {"payment_order": po, "amount": 501}, 400, "amount"),
        ("/v1/refunds", {"payment_order": po, "amount": 1.5}, 400, "amount"),
        ("/v1/refunds", {"amount": 5}, 400, "payment_order"),
        ("/v1/checkout_sessions", {"amount": 0, "currency": "USD", "return_url": "https://x.example"}, 400, "amount"),
        ("/v1/checkout_sessions", {"amount": 5, "currency": "usd", "return_url": "https://x.example"}, 400,
         "currency"),
        ("/v1/checkout_sessions", {"amount": 5, "currency": "USD", "return_url": "ftp://x.example"}, 400,
         "return_url"),
        ("/v1/checkout_sessions", {"amount": 5, "currency": "USD", "return_url": "x.example"}, 400, "return_url"),
    ]  # fmt: skip
    for path, body, status, param in cases:
        await _refused(client, path, body, status, param)
    tables = await _counts(shards, sim)
    assert tables[:3] == before[:3] and tables[3] == before[3]  # no payout or refund stored, nothing at the PSP
    for path in ("/v1/payments/pay_" + "0" * 24, f"/v1/refunds/re_{'0' * 24}", "/v1/payouts/x"):
        assert (await client.get(path)).status_code == 404
    their_payment = await other.get(
        f"/v1/payouts/{(await post(other, '/v1/payouts', {**payout, 'source': theirs})).json()['id']}"
    )
    assert their_payment.status_code == 200
    assert (await client.get(their_payment.request.url.path)).status_code == 404
