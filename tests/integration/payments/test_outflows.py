"""Money out: payouts (no overdraft under any concurrency, a failed payout gives the money back) and refunds (never
more than an order captured, out of the wallet the order credited)."""

from __future__ import annotations

import asyncio

import httpx

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, audit_clean, key, new_wallet, post
from tests.integration.payments.flows import final, paid_order, wallet


async def _payout(client: httpx.AsyncClient, source: str, amount: int, bank: str = "ba_good") -> httpx.Response:
    return await post(client, "/v1/payouts", {"source": source, "amount": amount, "currency": "USD",
                                              "destination": bank})  # fmt: skip


async def test_two_payouts_of_a_whole_balance_one_wins_every_time(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, settings: Settings
) -> None:
    sources = [await new_wallet(client, shards, funds=500) for _ in range(100)]
    rounds = await asyncio.gather(*(asyncio.gather(_payout(client, s, 500), _payout(client, s, 500)) for s in sources))
    for pair in rounds:
        assert sorted(r.status_code for r in pair) == [201, 402], [r.text for r in pair]
    for source in sources:
        assert (await wallet(client, source))["available"] == 0
    paid = await asyncio.gather(*(final(client, f"/v1/payouts/{r.json()['id']}") for pair in rounds for r in pair
                                  if r.status_code == 201))  # fmt: skip
    assert {p["status"] for p in paid} == {"paid"}
    await audit_clean(settings)


async def test_a_failed_payout_returns_the_money_with_both_legs_in_the_entries(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, settings: Settings
) -> None:
    source = await new_wallet(client, shards, funds=900)
    created = await _payout(client, source, 600, bank="ba_closed_fail")
    assert created.status_code == 201 and created.json()["status"] == "processing", created.text
    assert (await wallet(client, source))["available"] == 300  # it left at once
    done = await final(client, f"/v1/payouts/{created.json()['id']}")
    assert done["status"] == "failed" and done["failure_code"] == "account_closed", done
    assert (await wallet(client, source))["available"] == 900
    entries = (await client.get(f"/v1/wallets/{source}/entries")).json()["data"]
    assert [(e["type"], e["amount"]) for e in entries[:2]] == [("payout_return", 600), ("payout", -600)]
    await audit_clean(settings)


async def test_concurrent_refunds_never_exceed_the_capture(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, settings: Settings
) -> None:
    target = await new_wallet(client, shards)
    po = await paid_order(client, target, 1000)
    refunds = await asyncio.gather(*(post(client, "/v1/refunds", {"payment_order": po, "amount": 150})
                                     for _ in range(20)))  # fmt: skip
    accepted = [r for r in refunds if r.status_code == 201]
    assert len(accepted) == 6, [r.text for r in refunds]  # 6 x 150 = 900 <= 1000 < 7 x 150
    assert {r.status_code for r in refunds} <= {201, 400}
    assert all(r.json()["error"]["code"] == "amount_too_large" for r in refunds if r.status_code == 400)
    done = await asyncio.gather(*(final(client, f"/v1/refunds/{r.json()['id']}") for r in accepted))
    assert {d["status"] for d in done} == {"succeeded"}
    assert (await wallet(client, target))["available"] == 100
    rest = await post(client, "/v1/refunds", {"payment_order": po})  # the rest: 100
    assert rest.status_code == 201 and rest.json()["amount"] == 100, rest.text
    again = await post(client, "/v1/refunds", {"payment_order": po})
    assert again.status_code == 400 and again.json()["error"]["code"] == "charge_not_refundable"
    await audit_clean(settings)


async def test_a_refund_needs_the_money_still_in_the_wallet(
    client: httpx.AsyncClient, shards: Shards, executor: Executor, settings: Settings
) -> None:
    target, elsewhere = await new_wallet(client, shards), await new_wallet(client, shards)
    po = await paid_order(client, target, 400)
    moved = await post(client, "/v1/transfers", {"source": target, "destination": elsewhere, "amount": 300,
                                                 "currency": "USD"})  # fmt: skip
    assert moved.status_code == 201, moved.text
    refused = await post(client, "/v1/refunds", {"payment_order": po}, key())
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "insufficient_funds", refused.text
    partial = await post(client, "/v1/refunds", {"payment_order": po, "amount": 100})
    assert partial.status_code == 201, partial.text
    await audit_clean(settings)
