"""Transfer batches: each item a transfer on its own, idempotent by its reference; the batch idempotent by its key;
a malformed batch moves nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from shardpay.config import Settings
from shards.control import create_merchant
from shards.pools import Shards
from tests.conftest import audit_clean, key, new_wallet, post, settled


def item(source: str, destination: str, amount: int, reference: str) -> dict[str, Any]:
    return {"source": source, "destination": destination, "amount": amount, "currency": "USD", "reference": reference}


async def _balance(client: httpx.AsyncClient, wallet: str) -> int:
    available: int = (await client.get(f"/v1/wallets/{wallet}")).json()["available"]
    return available


async def test_a_batch_moves_each_item_once_with_its_own_outcome(
    client: httpx.AsyncClient, shards: Shards, settings: Settings
) -> None:
    rich, poor = await new_wallet(client, shards, funds=10_000, shard=0), await new_wallet(client, shards, shard=1)
    targets = [await new_wallet(client, shards, shard=s) for s in range(4)]
    items = [item(rich, targets[i % 4], 10, f"r-{key()}") for i in range(100)]
    items.insert(37, item(poor, targets[0], 5, f"r-{key()}"))  # no money: this item alone fails
    idem = key()
    created = await post(client, "/v1/transfer_batches", {"transfers": items}, idem)
    assert created.status_code == 201, created.text
    results = created.json()["results"]
    assert [r["reference"] for r in results] == [i["reference"] for i in items]
    assert [r["status"] for r in results] == [201] * 37 + [402] + [201] * 63
    assert results[37]["error"]["code"] == "insufficient_funds"
    assert all(r["transfer"]["amount"] == 10 for r in results if r["status"] == 201)
    await settled(shards, *(r["transfer"]["id"] for r in results if r["status"] == 201))
    assert await _balance(client, rich) == 10_000 - 1000
    assert [await _balance(client, t) for t in targets] == [250] * 4
    again = await post(client, "/v1/transfer_batches", {"transfers": items}, idem)
    assert (again.status_code, again.json()) == (201, created.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await post(client, "/v1/transfer_batches", {"transfers": items[:3]}, idem)
    assert other.status_code == 422
    got = await client.get(f"/v1/transfer_batches/{created.json()['id']}")
    assert got.status_code == 200 and {r["transfer"]["status"] for r in got.json()["results"] if "transfer" in r} == {
        "succeeded"}  # fmt: skip
    await audit_clean(settings)


async def test_an_items_reference_replays_across_batches(client: httpx.AsyncClient, shards: Shards) -> None:
    source, destination = await new_wallet(client, shards, funds=1000), await new_wallet(client, shards)
    reference = f"invoice-{key()}"
    first = await post(client, "/v1/transfer_batches", {"transfers": [item(source, destination, 100, reference)]})
    second = await post(client, "/v1/transfer_batches", {"transfers": [
        item(source, destination, 100, reference), item(source, destination, 1, f"r-{key()}")]})  # fmt: skip
    assert first.status_code == second.status_code == 201
    assert second.json()["results"][0]["transfer"]["id"] == first.json()["results"][0]["transfer"]["id"]
    reused = await post(client, "/v1/transfer_batches", {"transfers": [item(source, destination, 999, reference)]})
    assert reused.json()["results"][0]["status"] == 422  # the same reference, other parameters
    assert await _balance(client, source) == 1000 - 100 - 1


async def test_concurrent_batches_with_shared_references_move_each_once(
    client: httpx.AsyncClient, shards: Shards, settings: Settings
) -> None:
    source, destination = await new_wallet(client, shards, funds=100_000), await new_wallet(client, shards)
    shared = [item(source, destination, 7, f"s-{key()}") for _ in range(50)]
    answers = await asyncio.gather(*(post(client, "/v1/transfer_batches", {"transfers": shared}) for _ in range(6)))
    assert {a.status_code for a in answers} == {201}
    ids = {r["transfer"]["id"] for a in answers for r in a.json()["results"] if r["status"] == 201}
    assert len(ids) == 50  # 300 items, 50 references: 50 transfers
    await settled(shards, *ids)
    assert await _balance(client, destination) == 50 * 7
    await audit_clean(settings)


async def test_a_malformed_batch_is_refused_and_moves_nothing(client: httpx.AsyncClient, shards: Shards,
                                                               gateway: str) -> None:  # fmt: skip
    source, destination = await new_wallet(client, shards, funds=1000), await new_wallet(client, shards)
    one = item(source, destination, 1, "dup")
    for body, param in (
        ({"transfers": one}, "transfers"),
        ({"transfers": []}, "transfers"),
        ({"transfers": [item(source, destination, 1, f"r{i}") for i in range(1001)]}, "transfers"),
        ({"transfers": [one, {**one, "amount": 2}]}, "transfers[1][reference]"),
        ({"transfers": [{**one, "reference": "caf\u00e9"}]}, "transfers[0][reference]"),
        ({"transfers": [{**one, "amount": 1.5}]}, "transfers[0][amount]"),
        ({"transfers": [{k: v for k, v in one.items() if k != "reference"}]}, "transfers[0][reference]"),
        ({"transfers": [{**one, "memo": "x"}]}, "transfers[0][memo]"),
        ({}, "transfers"),
    ):
        refused = await post(client, "/v1/transfer_batches", body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, (param, refused.text)
    assert await _balance(client, source) == 1000
    made = await create_merchant(shards.control, "other", None, 1000, 1000)
    batch = await post(client, "/v1/transfer_batches", {"transfers": [item(source, destination, 1, f"r-{key()}")]})
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {made.api_key}"}) as other:
        assert (await other.get(f"/v1/transfer_batches/{batch.json()['id']}")).status_code == 404
    assert (await client.get("/v1/transfer_batches/trb_nope")).status_code == 404
