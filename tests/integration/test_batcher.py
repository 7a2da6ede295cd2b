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


async def clear(shards: Shards, batch: list[ledger.OpenTransfer]) -> bool:
    """Whether sp_open_transfers takes its set-based path for ``batch`` (judged before anything is applied)."""
    result: bool = await shards.pool(0).fetchval(
        "SELECT sp_open_batch_is_clear($1, $2, $3, $4, $5, $6, $7)",
        [t.merchant_id for t in batch], [t.idempotency_key for t in batch], [t.source for t in batch],
        [t.destination for t in batch], [t.amount for t in batch], [t.currency for t in batch],
        [t.cross_shard for t in batch],
    )  # fmt: skip
    return result


async def test_a_clean_batch_applies_as_one_set_with_wallets_on_both_sides(
    client: httpx.AsyncClient, shards: Shards, migrated: Any
) -> None:
    a = await new_wallet(client, shards, funds=100, shard=0)
    b = await new_wallet(client, shards, funds=80, shard=0)
    c = await new_wallet(client, shards, shard=0)
    merchant_id = await owner(shards, a)
    # b pays 80 while it receives 60 in the same batch; a pays exactly everything it holds, in two transfers.
    batch = [request(merchant_id, a, b, 60), request(merchant_id, b, c, 80), request(merchant_id, a, c, 40)]
    assert await clear(shards, batch)
    results = await ledger.open_transfers(shards.pool(0), batch)
    assert [r.outcome for r in results] == ["applied"] * 3
    assert [orjson.loads(r.body or b"{}")["id"] for r in results] == [t.transfer_id for t in batch]
    pool = shards.pool(0)
    balances = {w: await pool.fetchval("SELECT available FROM accounts WHERE id = $1", w) for w in (a, b, c)}
    assert balances == {a: 0, b: 60, c: 120}
    ids = [t.transfer_id for t in batch]
    assert await pool.fetchval("SELECT count(*) FROM transfers WHERE id = ANY($1) AND status = 'succeeded'", ids) == 3
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries WHERE ref = ANY($1)", ids) == 6
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE event_id = ANY($1)", [t.event_id for t in batch]) == 3
    # The same batch again: every key is stored now, so each transfer is judged alone and replays.
    assert not await clear(shards, batch)
    again = await ledger.open_transfers(pool, batch)
    assert [(r.outcome, r.body) for r in again] == [("replay", r.body) for r in results]
    await audit_clean(migrated)


async def test_batches_that_depend_on_order_are_not_applied_as_a_set(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    destination = await new_wallet(client, shards, shard=0)
    other_currency = await new_wallet(client, shards, currency="EUR", shard=0)
    merchant_id = await owner(shards, source)
    fine = request(merchant_id, source, destination, 50)
    assert await clear(shards, [fine, request(merchant_id, source, destination, 50)])
    assert not await clear(shards, [fine, request(merchant_id, source, destination, 51)])  # not all fit
    assert not await clear(shards, [fine, dataclasses.replace(fine, transfer_id="tr_other")])  # key repeated
    assert not await clear(shards, [fine, request(merchant_id, source, other_currency, 1)])  # currency
    assert not await clear(shards, [fine, request(merchant_id, source, "wal_0000missing", 1)])  # no wallet
    assert not await clear(shards, [fine, request("mer_someone_else", source, destination, 1)])  # not theirs


async def test_set_based_saga_legs_sum_what_each_wallet_gets(
    client: httpx.AsyncClient, shards: Shards, migrated: Any
) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    destination = await new_wallet(client, shards, shard=1)
    merchant_id = await owner(shards, source)
    opened = [dataclasses.replace(request(merchant_id, source, destination, amount), cross_shard=True)
              for amount in (10, 20, 30, 40)]  # fmt: skip
    assert await clear(shards, opened)
    assert [r.outcome for r in await ledger.open_transfers(shards.pool(0), opened)] == ["applied"] * 4
    assert await shards.pool(0).fetchval("SELECT available FROM accounts WHERE id = $1", source) == 0
    legs = [ledger.Inbound(t.transfer_id, merchant_id, destination, t.amount, "USD") for t in opened]
    for fenced in legs[2:]:
        assert await ledger.fence_inbound(shards.pool(1), fenced) == "aborted"
    inbound = await ledger.credit_inbounds(shards.pool(1), legs)
    assert inbound == ["applied", "applied", "aborted", "aborted"]
    assert await shards.pool(1).fetchval("SELECT available FROM accounts WHERE id = $1", destination) == 30
    finish = [ledger.Finish(t.transfer_id, result, "{}", f"evt_{t.transfer_id[3:]}", "{}")
              for t, result in zip(opened, inbound, strict=True)]  # fmt: skip
    assert await ledger.finish_transfers(shards.pool(0), finish) == ["succeeded", "succeeded", "failed", "failed"]
    assert await shards.pool(0).fetchval("SELECT available FROM accounts WHERE id = $1", source) == 70
    events = await shards.pool(0).fetch(
        "SELECT type FROM outbox WHERE event_id = ANY($1) ORDER BY seq", [f.event_id for f in finish]
    )
    assert [e["type"] for e in events] == ["transfer.succeeded"] * 2 + ["transfer.failed"] * 2
    await audit_clean(migrated)


async def test_one_tick_carries_every_kind_of_step_and_credits_come_before_debits(
    client: httpx.AsyncClient, shards: Shards, migrated: Any
) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    middle, last = await new_wallet(client, shards, shard=1), await new_wallet(client, shards, shard=1)
    merchant_id = await owner(shards, source)
    crossing = dataclasses.replace(request(merchant_id, source, middle, 40), cross_shard=True)
    assert (await ledger.open_transfer(shards.pool(0), crossing)).outcome == "applied"
    # On shard 1, one tick: leg 2 credits `middle` 40, and a transfer spends those 40 at once. The batch is not
    # clear as locked (middle held 0), so it is decided transfer by transfer, after the credit.
    onward = request(merchant_id, middle, last, 40)
    steps: list[ledger.Step] = [
        ledger.Lookup(last),
        onward,
        ledger.Inbound(crossing.transfer_id, merchant_id, middle, 40, "USD"),
        ledger.Lookup("wal_0000000000000000000000"),
    ]
    assert not await clear(dataclasses.replace(shards, pools=(shards.pool(1), *shards.pools[1:])), [onward])
    found, opened, credited, missing = await ledger.tick(shards.pool(1), steps)
    assert found == ledger.Found(merchant_id, "USD") and missing == ledger.Found(None, None)
    assert credited == "applied"
    assert isinstance(opened, ledger.Applied) and opened.outcome == "applied"
    pool = shards.pool(1)
    assert [await pool.fetchval("SELECT available FROM accounts WHERE id = $1", w) for w in (middle, last)] == [0, 40]
    leg3 = ledger.Finish(crossing.transfer_id, "applied", "{}", f"evt_{crossing.transfer_id[3:]}", "{}")
    assert await ledger.tick(shards.pool(0), [leg3]) == ["succeeded"]
    await audit_clean(migrated)
