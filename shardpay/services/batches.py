"""Transfer batches: up to 1,000 transfers in one request, each its own transfer with its own outcome.

Every item is a transfer like any other (``shardpay.services.transfers``), idempotent by its ``reference``: its key
is ``ref:<reference>`` in the merchant's key space, so an item whose reference was used before replays that
transfer's outcome (and one whose parameters differ gets 422, as a reused key does), whichever batch it came in.
All the items are submitted at once, so each shard's next tick carries the batch's steps for it together, which is
what makes a batch cheaper per transfer than as many requests.

The batch's answer lists each item's result in order and is stored with the batch's own idempotency record, on
the key's home shard, unless an item met a shard that is down (503): then nothing of the batch is stored, and a
retry under the same key runs it again (the items that did move money replay).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

import idempotency
from shardpay import ids
from shardpay.domain.errors import ApiError
from shardpay.services import idempotent, render, transfers
from shardpay.services.outcome import Caller, Outcome, stored_answer
from shards import ledger, queries
from shards.errors import on_shard
from shards.pools import Shards

MAX_ITEMS = 1000


@dataclass(frozen=True)
class Item:
    reference: str
    transfer: transfers.CreateTransfer
    params: dict[str, Any]  # as sent, for the item's own fingerprint


async def create(shards: Shards, caller: Caller, items: list[Item], inline_timeout: float) -> Outcome:
    home = shards.index_of(idempotent.home_slot(caller.merchant_id, caller.key))
    pool = shards.pool(home)
    earlier = await on_shard(home, ledger.replay(pool, caller.merchant_id, caller.key, caller.print))
    if earlier.outcome != "missing":
        return stored_answer(earlier)
    results = await asyncio.gather(*(_one(shards, caller, item, inline_timeout) for item in items))
    batch_id, created = ids.new_id("trb", idempotent.home_slot(caller.merchant_id, caller.key)), int(time.time())
    body = orjson.dumps({"id": batch_id, "object": "transfer_batch", "results": results, "created": created})
    if any(result["status"] == 503 for result in results):
        return Outcome(201, body)  # not stored: the retry runs again, and what moved replays
    refs = [_record(result) for result in results]
    try:
        stored = await on_shard(home, _store(pool, caller, batch_id, refs, created, body.decode()))
    except asyncpg.UniqueViolationError:  # a concurrent request with this key stored its answer first
        stored = await on_shard(home, ledger.replay(pool, caller.merchant_id, caller.key, caller.print))
    return stored_answer(stored)


async def _one(shards: Shards, batch: Caller, item: Item, inline_timeout: float) -> dict[str, Any]:
    fingerprint = idempotency.fingerprint("POST", "/v1/transfer_batches#item", item.params)
    caller = Caller(batch.merchant_id, batch.request_id, f"ref:{item.reference}", fingerprint)
    try:
        outcome = await transfers.create(shards, caller, item.transfer, inline_timeout)
    except ApiError as error:
        return {"reference": item.reference, "status": error.status, "error": error.body(batch.request_id)["error"]}
    answer = orjson.loads(outcome.body)
    if outcome.status == 201:
        return {"reference": item.reference, "status": 201, "transfer": answer}
    return {"reference": item.reference, "status": outcome.status, "error": answer["error"]}


def _record(result: dict[str, Any]) -> dict[str, Any]:
    """What the batch's row keeps of an item: enough to show it again as it is then."""
    kept = {"reference": result["reference"], "status": result["status"]}
    return (
        {**kept, "transfer": result["transfer"]["id"]} if "transfer" in result else {**kept, "error": result["error"]}
    )


async def _store(pool: asyncpg.Pool, caller: Caller, batch_id: str, refs: list[dict[str, Any]], created: int,
                 body: str) -> ledger.Applied:  # fmt: skip
    row = await pool.fetchrow(
        "SELECT * FROM sp_store_batch($1, $2, $3, $4, $5::jsonb, $6, $7)",
        caller.merchant_id, caller.key, caller.print, batch_id, orjson.dumps(refs).decode(), created, body,
    )  # fmt: skip
    assert row is not None
    return ledger.Applied(row["outcome"], row["status"], row["body"])


async def get(shards: Shards, caller: Caller, batch_id: str) -> Outcome:
    """The batch with each item as it is now (a cross-shard transfer that was 'processing' has succeeded since)."""
    slot = ids.parse(batch_id, "trb")
    if slot is None:
        raise ApiError.not_found(None, batch_id)
    shard = shards.index_of(slot)
    row = await on_shard(shard, shards.pool(shard).fetchrow("SELECT * FROM transfer_batches WHERE id = $1", batch_id))
    if row is None or row["merchant_id"] != caller.merchant_id:
        raise ApiError.not_found(None, batch_id)
    kept: list[dict[str, Any]] = orjson.loads(row["results"])
    now = await _transfers_now(shards, caller, [item["transfer"] for item in kept if "transfer" in item])
    results = [{**item, "transfer": now.get(item["transfer"], {"id": item["transfer"]})} if "transfer" in item
               else item for item in kept]  # fmt: skip
    return Outcome.of(200, {"id": batch_id, "object": "transfer_batch", "results": results, "created": row["created"]})


async def _transfers_now(shards: Shards, caller: Caller, transfer_ids: list[str]) -> dict[str, dict[str, Any]]:
    by_shard: dict[int, list[str]] = {}
    for transfer_id in transfer_ids:
        slot = ids.parse(transfer_id, "tr")
        assert slot is not None, f"stored id {transfer_id!r} is malformed"
        by_shard.setdefault(shards.index_of(slot), []).append(transfer_id)
    found: dict[str, dict[str, Any]] = {}
    for shard, wanted in by_shard.items():
        rows = await on_shard(shard, queries.transfers(shards.pool(shard), wanted))
        found.update([(row["id"], await transfers.as_of_now(shards, render.transfer_row(row))) for row in rows])
    return found
