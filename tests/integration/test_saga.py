"""The cross-shard saga under crashes, outages and races: recovery finishes or compensates, each leg once.

A crash is simulated by running only the first legs ourselves (``shards.ledger``), exactly as the gateway
would have before dying; an outage by handing the service a ``Shards`` whose destination pool fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio

import idempotency
from shardpay import ids
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.domain.events import render_event
from shardpay.services import render, saga, transfers
from shardpay.services.outcome import Caller
from shardpay.services.recovery import recover_once
from shards import ledger
from shards.pools import Shards
from tests.conftest import StackMerchant, audit_clean, key, new_wallet, post, settled

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/shardpay_test_nowhere"


@dataclass(frozen=True)
class Stuck:
    """A cross-shard transfer whose gateway died after leg 1, and the request that created it."""

    id: str
    key: str
    body: dict[str, Any]


def shard_of(shards: Shards, object_id: str, prefix: str) -> int:
    slot = ids.parse(object_id, prefix)
    assert slot is not None
    return shards.index_of(slot)


def pool_of(shards: Shards, object_id: str, prefix: str) -> asyncpg.Pool:
    return shards.pool(shard_of(shards, object_id, prefix))


def transfer_body(source: str, destination: str, amount: int) -> dict[str, Any]:
    return {"source": source, "destination": destination, "amount": amount, "currency": "USD"}


def open_request(merchant_id: str, idem: str, body: dict[str, Any]) -> ledger.OpenTransfer:
    """What ``transfers.create`` sends for this body, fingerprinted as the gateway fingerprints it."""
    slot = ids.parse(body["source"], "wal")
    assert slot is not None
    transfer_id, request_id, created = ids.new_id("tr", slot), f"req_{idem}", int(time.time())
    obj = render.transfer(transfer_id, body["source"], body["destination"], body["amount"], "USD", None,
                          "processing", created)  # fmt: skip
    event_id, event_body = render_event("transfer.succeeded", merchant_id, request_id, obj, slot, created)
    fail_body = orjson.dumps(ApiError.insufficient_funds().body(request_id)).decode()
    return ledger.OpenTransfer(
        merchant_id, idem, idempotency.fingerprint("POST", "/v1/transfers", body), transfer_id, body["source"],
        body["destination"], body["amount"], "USD", None, request_id, created, True, orjson.dumps(obj).decode(),
        fail_body, event_id, event_body,
    )  # fmt: skip


async def crash_after_leg_one(shards: Shards, merchant_id: str, source: str, destination: str, amount: int) -> Stuck:
    body, idem = transfer_body(source, destination, amount), key()
    request = open_request(merchant_id, idem, body)
    applied = await ledger.open_transfer(pool_of(shards, source, "wal"), request)
    assert applied.outcome == "applied"
    return Stuck(request.transfer_id, idem, body)


async def run_leg_two(shards: Shards, merchant_id: str, stuck: Stuck) -> str:
    body = stuck.body
    pool = pool_of(shards, body["destination"], "wal")
    return await ledger.credit_inbound(
        pool, ledger.Inbound(stuck.id, merchant_id, body["destination"], body["amount"], "USD")
    )


async def row(shards: Shards, transfer_id: str) -> asyncpg.Record:
    found = await pool_of(shards, transfer_id, "tr").fetchrow("SELECT * FROM transfers WHERE id = $1", transfer_id)
    assert found is not None
    return found


async def entries(shards: Shards, transfer_id: str) -> Counter[str]:
    """Ledger entries written for this transfer on every shard, by kind."""
    counts: Counter[str] = Counter()
    for pool in shards.pools:
        for found in await pool.fetch("SELECT kind FROM ledger_entries WHERE ref = $1", transfer_id):
            counts[found["kind"]] += 1
    return counts


async def events(shards: Shards, transfer_id: str) -> Counter[str]:
    query = "SELECT type FROM outbox WHERE type LIKE 'transfer.%' AND (body::jsonb #>> '{data,object,id}') = $1"
    return Counter(found["type"] for found in await pool_of(shards, transfer_id, "tr").fetch(query, transfer_id))


async def available(client: httpx.AsyncClient, wallet_id: str) -> int:
    balance: int = (await client.get(f"/v1/wallets/{wallet_id}")).json()["available"]
    return balance


async def assert_final(client: httpx.AsyncClient, shards: Shards, stuck: Stuck, status: str) -> None:
    """Final everywhere: the row, GET, the idempotent replay of the original request, one event."""
    assert (await row(shards, stuck.id))["status"] == status
    assert (await client.get(f"/v1/transfers/{stuck.id}")).json()["status"] == status
    replay = await post(client, "/v1/transfers", stuck.body, stuck.key)
    assert replay.status_code == 201, replay.text
    assert replay.json()["status"] == status and replay.json()["id"] == stuck.id
    assert replay.headers.get("idempotent-replayed") == "true"
    assert await events(shards, stuck.id) == {f"transfer.{status}": 1}


@pytest.fixture
def recover_now(migrated: Settings) -> Settings:
    return dataclasses.replace(migrated, saga_recovery_after=0.0)


@pytest_asyncio.fixture(scope="module")
async def dead_pool() -> AsyncIterator[asyncpg.Pool]:
    """A pool for a shard that is down: min_size 0, so it only fails when used."""
    pool = await asyncpg.create_pool(UNREACHABLE, min_size=0, max_size=2, timeout=1)
    assert pool is not None
    yield pool
    await pool.close()


def with_pool(shards: Shards, index: int, pool: Any) -> Shards:
    pools = tuple(pool if i == index else p for i, p in enumerate(shards.pools))
    return Shards(control=shards.control, pools=pools, slots=shards.slots)


async def test_recovery_finishes_transfers_left_after_leg_one_and_after_leg_two(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, migrated: Settings, recover_now: Settings
) -> None:
    source = await new_wallet(client, shards, funds=1_000, shard=0)
    first, second = await new_wallet(client, shards, shard=1), await new_wallet(client, shards, shard=2)
    after_one = await crash_after_leg_one(shards, merchant.id, source, first, 100)
    after_two = await crash_after_leg_one(shards, merchant.id, source, second, 200)
    assert await run_leg_two(shards, merchant.id, after_two) == "applied"
    assert [await available(client, w) for w in (source, first, second)] == [700, 0, 200]
    # In flight, the books still balance: transit holds leg 1, interchange offsets leg 2.
    await audit_clean(migrated)

    await recover_once(shards, recover_now)
    for stuck in (after_one, after_two):
        await assert_final(client, shards, stuck, "succeeded")
        assert await entries(shards, stuck.id) == {"transfer_out": 2, "transfer_in": 2, "transfer_settle": 2}
    assert [await available(client, w) for w in (source, first, second)] == [700, 100, 200]
    await recover_once(shards, recover_now)  # a second pass finds nothing left to do
    assert await events(shards, after_one.id) == {"transfer.succeeded": 1}
    await audit_clean(migrated)


async def test_a_transfer_is_answered_once_leg_two_commits_and_leg_three_follows(
    client: httpx.AsyncClient, shards: Shards, migrated: Settings
) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    destination = await new_wallet(client, shards, shard=1)
    response = await post(client, "/v1/transfers", transfer_body(source, destination, 30))
    assert response.status_code == 201 and response.json()["status"] == "succeeded", response.text
    transfer_id = response.json()["id"]
    # From the answer on, every view agrees the transfer has succeeded, whether or not leg 3 has run yet.
    assert (await client.get(f"/v1/transfers/{transfer_id}")).json()["status"] == "succeeded"
    assert [await available(client, w) for w in (source, destination)] == [70, 30]
    await settled(shards, transfer_id)
    assert (await row(shards, transfer_id))["status"] == "succeeded"
    assert await entries(shards, transfer_id) == {"transfer_out": 2, "transfer_in": 2, "transfer_settle": 2}
    assert await events(shards, transfer_id) == {"transfer.succeeded": 1}
    await audit_clean(migrated)


async def test_between_legs_two_and_three_get_and_replay_say_succeeded(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, dead_pool: asyncpg.Pool,
    migrated: Settings, recover_now: Settings,
) -> None:  # fmt: skip
    source = await new_wallet(client, shards, funds=100, shard=2)
    destination = await new_wallet(client, shards, shard=3)
    stuck = await crash_after_leg_one(shards, merchant.id, source, destination, 40)
    caller = Caller(merchant.id, "req_between", stuck.key, idempotency.fingerprint("POST", "/v1/transfers", stuck.body))
    replayed = await transfers.create(shards, caller, command(stuck.body), 1.0)
    assert (replayed.replayed, orjson.loads(replayed.body)["status"]) == (True, "processing")  # before leg 2

    assert await run_leg_two(shards, merchant.id, stuck) == "applied"
    assert (await row(shards, stuck.id))["status"] == "processing"  # the source shard's row waits for leg 3
    assert (await client.get(f"/v1/transfers/{stuck.id}")).json()["status"] == "succeeded"
    replayed = await transfers.create(shards, caller, command(stuck.body), 1.0)
    assert (replayed.replayed, orjson.loads(replayed.body)["status"]) == (True, "succeeded")
    # With the destination shard down nobody can tell leg 2 has applied: the source shard's 'processing' stands.
    seen = await transfers.get(with_pool(shards, 3, dead_pool), Caller(merchant.id, "req_get"), stuck.id)
    assert orjson.loads(seen.body)["status"] == "processing"

    await recover_once(shards, recover_now)
    await assert_final(client, shards, stuck, "succeeded")
    await audit_clean(migrated)


async def test_recovery_compensates_a_transfer_past_the_abort_deadline(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, migrated: Settings
) -> None:
    source, destination = (
        await new_wallet(client, shards, funds=500, shard=1),
        await new_wallet(client, shards, shard=3),
    )
    stuck = await crash_after_leg_one(shards, merchant.id, source, destination, 300)
    # Only this transfer is past the deadline: others in flight in the shared databases are settled, not aborted.
    await pool_of(shards, stuck.id, "tr").execute(
        "UPDATE transfers SET created_at = now() - interval '2 hours' WHERE id = $1", stuck.id
    )
    await recover_once(shards, dataclasses.replace(migrated, saga_recovery_after=0.0, saga_abort_after=3600.0))

    await assert_final(client, shards, stuck, "failed")
    assert (await row(shards, stuck.id))["saga_state"] == "compensated"
    assert [await available(client, w) for w in (source, destination)] == [500, 0]
    # The fence holds: a leg 2 arriving late (a gateway waking up) credits nothing.
    assert await run_leg_two(shards, merchant.id, stuck) == "aborted"
    assert await available(client, destination) == 0
    assert await entries(shards, stuck.id) == {"transfer_out": 2, "transfer_reversal": 2}
    await audit_clean(migrated)


async def test_racing_recoveries_and_the_inline_path_apply_each_leg_once(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, migrated: Settings, recover_now: Settings
) -> None:
    source = await new_wallet(client, shards, funds=10_000, shard=2)
    targets = [await new_wallet(client, shards, shard=0), await new_wallet(client, shards, shard=3)]
    stuck = [await crash_after_leg_one(shards, merchant.id, source, targets[i % 2], 10 + i) for i in range(12)]
    for half_done in stuck[::3]:
        await run_leg_two(shards, merchant.id, half_done)
    rows = [await row(shards, s.id) for s in stuck]
    inline = [saga.settle(shards, r) for r in rows]  # what each original request's gateway would still be doing
    await asyncio.gather(recover_once(shards, recover_now), recover_once(shards, recover_now), *inline)

    for transfer in stuck:
        assert (await row(shards, transfer.id))["status"] == "succeeded"
        assert await entries(shards, transfer.id) == {"transfer_out": 2, "transfer_in": 2, "transfer_settle": 2}
        assert await events(shards, transfer.id) == {"transfer.succeeded": 1}
    paid = [sum(10 + i for i in range(12) if i % 2 == n) for n in (0, 1)]
    assert [await available(client, w) for w in (source, *targets)] == [10_000 - sum(paid), *paid]
    await audit_clean(migrated)


async def test_abort_racing_settle_ends_one_way_or_the_other_never_both(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, migrated: Settings, recover_now: Settings
) -> None:
    source, destination = (
        await new_wallet(client, shards, funds=1_000, shard=3),
        await new_wallet(client, shards, shard=1),
    )
    stuck = [await crash_after_leg_one(shards, merchant.id, source, destination, 50) for _ in range(10)]
    rows = [await row(shards, s.id) for s in stuck]
    races = [call for r in rows for call in (saga.abort(shards, r), saga.settle(shards, r))]
    await asyncio.gather(recover_once(shards, recover_now), *races)

    outcomes = Counter[str]()
    for transfer in stuck:
        status = (await row(shards, transfer.id))["status"]
        outcomes[status] += 1
        legs = {"transfer_in": 2, "transfer_settle": 2} if status == "succeeded" else {"transfer_reversal": 2}
        assert await entries(shards, transfer.id) == {"transfer_out": 2, **legs}
        assert await events(shards, transfer.id) == {f"transfer.{status}": 1}
    assert set(outcomes) <= {"succeeded", "failed"}
    credited = 50 * outcomes["succeeded"]
    assert [await available(client, w) for w in (source, destination)] == [1_000 - credited, credited]
    await audit_clean(migrated)


async def test_leg_two_that_waits_on_a_fence_answers_aborted_and_leg_three_refunds(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, migrated: Settings
) -> None:
    """The fence commits while leg 2 waits on its row: leg 2 must read what the fence stored, not nothing."""
    source = await new_wallet(client, shards, funds=100, shard=3)
    destination = await new_wallet(client, shards, shard=1)
    stuck = await crash_after_leg_one(shards, merchant.id, source, destination, 40)
    leg = ledger.Inbound(stuck.id, merchant.id, destination, 40, "USD")
    dst = pool_of(shards, destination, "wal")
    async with dst.acquire() as fencing:
        fence = fencing.transaction()
        await fence.start()
        assert await fencing.fetchval("SELECT sp_fence_inbound($1, $2, $3, $4, $5)", *dataclasses.astuple(leg)) == (
            "aborted"
        )
        waiting = asyncio.create_task(ledger.credit_inbound(dst, leg))
        await asyncio.sleep(0.5)  # leg 2 is now waiting on the fence's uncommitted row
        assert not waiting.done()
        await fence.commit()
    inbound = await waiting
    assert inbound == "aborted"
    assert await saga.finish(shards, await row(shards, stuck.id), inbound) == "failed"
    assert [await available(client, w) for w in (source, destination)] == [100, 0]
    await audit_clean(migrated)


async def test_leg_three_with_no_known_inbound_compensates_in_full(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, migrated: Settings
) -> None:
    source = await new_wallet(client, shards, funds=100, shard=3)
    destination = await new_wallet(client, shards, shard=1)
    stuck = await crash_after_leg_one(shards, merchant.id, source, destination, 40)
    leg = ledger.Inbound(stuck.id, merchant.id, destination, 40, "USD")
    assert await ledger.fence_inbound(pool_of(shards, destination, "wal"), leg) == "aborted"
    # A caller that lost what leg 2 answered (NULL): anything but 'applied' is a full compensation.
    leg3 = ledger.Finish(stuck.id, None, "{}", f"evt_{stuck.id[3:]}", "{}")  # type: ignore[arg-type]
    assert await ledger.finish_transfers(pool_of(shards, source, "wal"), [leg3]) == ["failed"]
    assert await available(client, source) == 100
    await audit_clean(migrated)


def caller_for(merchant: StackMerchant, body: dict[str, Any]) -> Caller:
    idem = key()
    return Caller(merchant.id, f"req_{idem}", idem, idempotency.fingerprint("POST", "/v1/transfers", body))


def command(body: dict[str, Any]) -> transfers.CreateTransfer:
    return transfers.CreateTransfer(body["source"], body["destination"], body["amount"], "USD", None)


async def test_destination_down_before_any_leg_moves_nothing(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, dead_pool: asyncpg.Pool, migrated: Settings
) -> None:
    source, destination = (
        await new_wallet(client, shards, funds=100, shard=0),
        await new_wallet(client, shards, shard=3),
    )
    body = transfer_body(source, destination, 60)
    with pytest.raises(ApiError) as caught:
        await transfers.create(with_pool(shards, 3, dead_pool), caller_for(merchant, body), command(body), 1.0)
    assert (caught.value.status, caught.value.code) == (503, "shard_unavailable")
    assert await available(client, source) == 100
    await audit_clean(migrated)


class LegTwoFails:
    """A destination shard that answers the pre-flight wallet lookup, then goes down before leg 2."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fetchval(self, query: str, *args: Any) -> Any:
        raise ConnectionRefusedError("the destination shard went down")

    async def fetch(self, query: str, *args: Any) -> Any:
        # A tick: sp_tick's first four arguments are its claims (three) and lookups; a tick of those alone passes.
        if not any(args[4:]):
            return await self._pool.fetch(query, *args)
        raise ConnectionRefusedError("the destination shard went down")


async def test_destination_down_after_leg_one_answers_processing_and_recovery_finishes(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, dead_pool: asyncpg.Pool,
    migrated: Settings, recover_now: Settings,
) -> None:  # fmt: skip
    source, destination = (
        await new_wallet(client, shards, funds=100, shard=0),
        await new_wallet(client, shards, shard=3),
    )
    body = transfer_body(source, destination, 60)
    flaky = with_pool(shards, 3, cast(asyncpg.Pool, LegTwoFails(shards.pool(3))))
    outcome = await transfers.create(flaky, caller_for(merchant, body), command(body), 1.0)
    created = orjson.loads(outcome.body)
    assert (outcome.status, created["status"], outcome.final) == (201, "processing", False)
    assert (await row(shards, created["id"]))["saga_state"] == "debited"
    assert await available(client, source) == 40

    # While shard 3 is down, recovery skips what needs it and still finishes what does not.
    elsewhere = await crash_after_leg_one(shards, merchant.id, await new_wallet(client, shards, funds=5, shard=1),
                                          await new_wallet(client, shards, shard=2), 5)  # fmt: skip
    counts = await recover_once(with_pool(shards, 3, dead_pool), recover_now)
    assert counts["unavailable"] >= 1 and counts["shard_unavailable"] == 1, counts
    assert (await row(shards, created["id"]))["saga_state"] == "debited"
    assert (await row(shards, elsewhere.id))["status"] == "succeeded"

    await recover_once(shards, recover_now)  # shard 3 is back
    assert (await client.get(f"/v1/transfers/{created['id']}")).json()["status"] == "succeeded"
    assert [await available(client, w) for w in (source, destination)] == [40, 60]
    await audit_clean(migrated)


async def test_retry_of_a_finished_cross_shard_transfer_is_answered_while_its_destination_is_down(
    client: httpx.AsyncClient, shards: Shards, migrated: Settings
) -> None:
    source = await new_wallet(client, shards, funds=100, shard=0)
    destination = await new_wallet(client, shards, shard=1)
    body = {"source": source, "destination": destination, "amount": 40, "currency": "USD"}
    idem = key()
    first = await post(client, "/v1/transfers", body, idem)
    assert first.status_code == 201 and first.json()["status"] == "succeeded"

    dead = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1)
    broken = Shards(shards.control, tuple(dead if i == 1 else p for i, p in enumerate(shards.pools)), shards.slots)
    merchant_id = await shards.pool(0).fetchval("SELECT merchant_id FROM accounts WHERE id = $1", source)
    fingerprint = idempotency.fingerprint("POST", "/v1/transfers", body)
    caller = Caller(merchant_id, "req_retry", idem, fingerprint)
    replay = await transfers.create(broken, caller, transfers.CreateTransfer(source, destination, 40, "USD", None), 1.0)
    assert replay.replayed and replay.status == 201 and orjson.loads(replay.body)["id"] == first.json()["id"]
    with pytest.raises(ApiError) as fresh:
        await transfers.create(broken, Caller(merchant_id, "req_new", key(), fingerprint),
                               transfers.CreateTransfer(source, destination, 40, "USD", None), 1.0)  # fmt: skip
    assert fresh.value.status == 503
    await dead.close()
