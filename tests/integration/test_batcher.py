"""Group commit: a batch applies each transfer on its own terms, and a full shard says 503 at once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from functools import partial
from typing import Any

import httpx
import orjson

import idempotency
from shardpay.domain.errors import ApiError
from shardpay.services import transfers
from shardpay.services.outcome import Caller
from shards import ledger
from shards.batcher import Batcher, shard_overloaded
from shards.pools import Shards
from tests.conftest import audit_clean, key, new_wallet


def request(
    merchant_id: str, source: str, destination: str, amount: int, idem: str | None = None
) -> ledger.OpenTransfer:
    caller_key = idem or key()
    body = {"source": source, "destination": destination, "amount": amount, "currency": "USD"}
    caller = Caller(merchant_id, "req_batch", caller_key, idempotency.fingerprint("POST", "/v1/transfers", body))
    route = transfers._Route(int(source[4:8], 16), 0, 0)
    cmd = transfers.CreateTransfer(source, destination, amount, "USD", None)
    return transfers._open_request(caller, cmd, route)


def opener(shards: Shards, **limits: int) -> Batcher[ledger.OpenTransfer, ledger.Applied]:
    pool = shards.pool(0)
    overloaded = partial(shard_overloaded, 0)
    return Batcher(partial(ledger.open_transfers, pool), partial(ledger.open_transfer, pool), overloaded, **limits)


async def owner(shards: Shards, wallet: str) -> Any:
    return await shards.pool(0).fetchval("SELECT merchant_id FROM accounts WHERE id = $1", wallet)


async def test_one_batch_mixed_outcomes(client: httpx.AsyncClient, shards: Shards, migrated: Any) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    destination = await new_wallet(client, shards, shard=0)
    merchant_id = await owner(shards, source)
    duplicate = key()
    batch = [
        request(merchant_id, source, destination, 60),
        request(merchant_id, source, destination, 60),  # insufficient after the first: must not fail the others
        request(merchant_id, source, destination, 30, duplicate),
        request(merchant_id, source, destination, 30, duplicate),  # same key in the same batch: a replay
    ]
    results = await ledger.open_transfers(shards.pool(0), batch)
    assert [r.outcome for r in results] == ["applied", "insufficient_funds", "applied", "replay"]
    assert results[3].body == results[2].body
    assert await shards.pool(0).fetchval("SELECT available FROM accounts WHERE id = $1", source) == 10
    await audit_clean(migrated)


async def test_concurrent_submissions_are_batched_and_answered_each(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=1_000, shard=0)
    destination = await new_wallet(client, shards, shard=0)
    merchant_id = await owner(shards, source)
    batcher = opener(shards, max_batch=16, max_inflight=1)
    results = await asyncio.gather(*(batcher.submit(request(merchant_id, source, destination, 10))
                                     for _ in range(120)))  # fmt: skip
    assert [r.outcome for r in results].count("applied") == 100
    assert [r.outcome for r in results].count("insufficient_funds") == 20
    ids = {orjson.loads(r.body or b"{}").get("id") for r in results if r.outcome == "applied"}
    assert len(ids) == 100


async def test_full_queue_answers_503_at_once(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=1_000, shard=0)
    destination = await new_wallet(client, shards, shard=0)
    merchant_id = await owner(shards, source)
    batcher = opener(shards, max_batch=1, max_inflight=1, queue_limit=5)
    started = time.monotonic()
    outcomes = await asyncio.gather(*(batcher.submit(request(merchant_id, source, destination, 1))
                                      for _ in range(40)), return_exceptions=True)  # fmt: skip
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert refused and all(e.status == 503 and e.code == "shard_overloaded" for e in refused)
    assert "Retry-After" in refused[0].headers
    applied = [o for o in outcomes if isinstance(o, ledger.Applied)]
    assert len(applied) + len(refused) == 40 and len(applied) <= 6
    assert time.monotonic() - started < 10
    available = await shards.pool(0).fetchval("SELECT available FROM accounts WHERE id = $1", source)
    assert available == 1_000 - len(applied)


async def test_a_poisoned_batch_falls_back_to_singles(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    destination = await new_wallet(client, shards, shard=0)
    merchant_id = await owner(shards, source)
    good = request(merchant_id, source, destination, 5)
    # A transfer id that already exists breaks the whole batch (primary key); its neighbour must still go through.
    first = request(merchant_id, source, destination, 5)
    await ledger.open_transfer(shards.pool(0), first)
    poison = dataclasses.replace(request(merchant_id, source, destination, 5), transfer_id=first.transfer_id)
    batcher = opener(shards, max_batch=8, max_inflight=1)
    outcomes = await asyncio.gather(batcher.submit(poison), batcher.submit(good), return_exceptions=True)
    assert isinstance(outcomes[0], Exception)
    assert isinstance(outcomes[1], ledger.Applied) and outcomes[1].outcome == "applied"


async def test_saga_legs_batch_once_each(client: httpx.AsyncClient, shards: Shards, migrated: Any) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    destination = await new_wallet(client, shards, shard=1)
    merchant_id = await owner(shards, source)
    opened = []
    for amount in (10, 20):
        t = dataclasses.replace(request(merchant_id, source, destination, amount), cross_shard=True)
        assert (await ledger.open_transfer(shards.pool(0), t)).outcome == "applied"
        opened.append(t)
    legs = [ledger.Inbound(t.transfer_id, merchant_id, destination, t.amount, "USD") for t in opened]
    # The first transfer's leg 2 twice in one batch: one credit.
    assert await ledger.credit_inbounds(shards.pool(1), [legs[0], legs[0]]) == ["applied", "applied"]
    assert await ledger.fence_inbound(shards.pool(1), legs[1]) == "aborted"
    finish = [ledger.Finish(t.transfer_id, outcome, "{}", f"evt_{t.transfer_id[3:]}", "{}")
              for t, outcome in zip(opened, ("applied", "aborted"), strict=True)]  # fmt: skip
    assert await ledger.finish_transfers(shards.pool(0), finish) == ["succeeded", "failed"]
    assert await ledger.finish_transfers(shards.pool(0), finish) == ["succeeded", "failed"]  # again: no effect
    assert await shards.pool(1).fetchval("SELECT available FROM accounts WHERE id = $1", destination) == 10
    assert await shards.pool(0).fetchval("SELECT available FROM accounts WHERE id = $1", source) == 90
    await audit_clean(migrated)
