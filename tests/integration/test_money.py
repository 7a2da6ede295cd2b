"""Races of real transfer requests through the gateway, and the invariants that must hold after them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import httpx

from shardpay import ids
from shardpay.config import Settings
from shardpay.services.recovery import recover_once
from shards.pools import Shards
from tests.conftest import audit_clean, new_wallet, post

AMOUNT = 37
WINNERS = 50
RACERS = 200


async def available(client: httpx.AsyncClient, wallet_id: str) -> int:
    response = await client.get(f"/v1/wallets/{wallet_id}")
    assert response.status_code == 200, response.text
    balance: int = response.json()["available"]
    return balance


async def entry_count(shards: Shards, wallet_id: str) -> int:
    slot = ids.parse(wallet_id, "wal")
    assert slot is not None
    count: int = await shards.pool(shards.index_of(slot)).fetchval(
        "SELECT count(*) FROM ledger_entries WHERE account_id = $1", wallet_id
    )
    return count


async def race(client: httpx.AsyncClient, source: str, destination: str) -> list[httpx.Response]:
    """RACERS concurrent transfers of AMOUNT, each under its own idempotency key."""
    body = {"source": source, "destination": destination, "amount": AMOUNT, "currency": "USD"}
    return list(await asyncio.gather(*(post(client, "/v1/transfers", body) for _ in range(RACERS))))


def assert_exactly_winners_paid(responses: list[httpx.Response]) -> list[dict[str, object]]:
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: WINNERS, 402: RACERS - WINNERS}, statuses
    for response in responses:
        if response.status_code == 402:
            assert response.json()["error"]["code"] == "insufficient_funds"
    return [r.json() for r in responses if r.status_code == 201]


async def test_race_on_one_shard_pays_exactly_what_the_wallet_holds(
    client: httpx.AsyncClient, shards: Shards, migrated: Settings
) -> None:
    source = await new_wallet(client, shards, funds=WINNERS * AMOUNT, shard=0)
    destination = await new_wallet(client, shards, shard=0)
    won = assert_exactly_winners_paid(await race(client, source, destination))
    assert {t["status"] for t in won} == {"succeeded"}
    assert await available(client, source) == 0
    assert await available(client, destination) == WINNERS * AMOUNT
    assert await entry_count(shards, source) == 1 + WINNERS  # the funding, then one debit per winner
    assert await entry_count(shards, destination) == WINNERS
    await audit_clean(migrated)


async def test_race_across_shards_pays_exactly_what_the_wallet_holds(
    client: httpx.AsyncClient, shards: Shards, migrated: Settings
) -> None:
    source = await new_wallet(client, shards, funds=WINNERS * AMOUNT, shard=1)
    destination = await new_wallet(client, shards, shard=2)
    won = assert_exactly_winners_paid(await race(client, source, destination))
    assert {t["status"] for t in won} <= {"succeeded", "processing"}
    assert await available(client, source) == 0
    if any(t["status"] == "processing" for t in won):
        # The inline completion timed out for some: recovery, not the client, finishes them.
        await recover_once(shards, dataclasses.replace(migrated, saga_recovery_after=0.0))
    for transfer in won:
        fetched = await client.get(f"/v1/transfers/{transfer['id']}")
        assert fetched.json()["status"] == "succeeded"
    assert await available(client, destination) == WINNERS * AMOUNT
    assert await entry_count(shards, source) == 1 + WINNERS
    assert await entry_count(shards, destination) == WINNERS
    await audit_clean(migrated)


async def test_opposite_transfers_on_one_shard_never_deadlock(
    client: httpx.AsyncClient, shards: Shards, migrated: Settings
) -> None:
    funds = 100 * AMOUNT
    a = await new_wallet(client, shards, funds=funds, shard=3)
    b = await new_wallet(client, shards, funds=funds, shard=3)
    forth = {"source": a, "destination": b, "amount": AMOUNT, "currency": "USD"}
    back = {"source": b, "destination": a, "amount": AMOUNT, "currency": "USD"}
    calls = [post(client, "/v1/transfers", forth if i % 2 else back) for i in range(200)]
    responses = await asyncio.gather(*calls)
    statuses = Counter(r.status_code for r in responses)
    # Each wallet can pay all 100 of its own transfers whatever the order, so every one succeeds.
    assert statuses == {201: 200}, [r.text for r in responses if r.status_code != 201][:3]
    assert (await available(client, a), await available(client, b)) == (funds, funds)
    assert await entry_count(shards, a) == await entry_count(shards, b) == 1 + 200
    await audit_clean(migrated)
