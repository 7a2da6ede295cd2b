"""Idempotency: one effect per key, whatever the concurrency, even after Redis forgets everything."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from shardpay.services import idempotent
from shards.pools import Shards
from tests.conftest import TEST_REDIS_URL, StackMerchant, free_port, key, new_wallet, post, start_gateway, stop_process


async def flush_redis() -> None:
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    await client.flushdb()
    await client.aclose()


async def balance(client: httpx.AsyncClient, wallet: str) -> int:
    available: int = (await client.get(f"/v1/wallets/{wallet}")).json()["available"]
    return available


async def race_one_key(client: httpx.AsyncClient, body: dict[str, object], n: int) -> Counter[int]:
    idem = key()
    responses = await asyncio.gather(*(post(client, "/v1/transfers", body, idem) for _ in range(n)))
    return Counter(r.status_code for r in responses)


@pytest.mark.parametrize("cross", [False, True])
async def test_fifty_concurrent_requests_one_effect_then_redis_flushed(
    client: httpx.AsyncClient, shards: Shards, cross: bool
) -> None:
    source = await new_wallet(client, shards, funds=1_000, shard=0)
    destination = await new_wallet(client, shards, shard=1 if cross else 0)
    body = {"source": source, "destination": destination, "amount": 7, "currency": "USD"}
    idem = key()
    responses = await asyncio.gather(*(post(client, "/v1/transfers", body, idem) for _ in range(50)))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    assert statuses[201] >= 1
    ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(ids) == 1
    assert await balance(client, source) == 993 and await balance(client, destination) == 7

    await flush_redis()
    retry = await post(client, "/v1/transfers", body, idem)
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["id"] in ids
    assert await balance(client, source) == 993 and await balance(client, destination) == 7

    await flush_redis()
    changed = await post(client, "/v1/transfers", {**body, "amount": 8}, idem)
    assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"


async def test_replay_is_byte_identical_and_flagged(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=10)
    destination = await new_wallet(client, shards)
    body = {"source": source, "destination": destination, "amount": 3, "currency": "USD"}
    idem = key()
    first = await post(client, "/v1/transfers", body, idem)
    second = await post(client, "/v1/transfers", body, idem)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    assert first.content == second.content
    # Key order and whitespace are not "different parameters".
    reordered = await client.post("/v1/transfers", content=(
        f'{{ "currency":"USD", "amount":3, "destination":"{destination}", "source":"{source}" }}'
    ), headers={"Idempotency-Key": idem, "Content-Type": "application/json"})  # fmt: skip
    assert reordered.status_code == 201 and reordered.content == first.content


async def test_errors_are_replayed_too(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=5)
    destination = await new_wallet(client, shards)
    body = {"source": source, "destination": destination, "amount": 6, "currency": "USD"}
    idem = key()
    first = await post(client, "/v1/transfers", body, idem)
    assert first.status_code == 402
    from shardpay.services import wallets

    await wallets.credit(shards, source, 100, "top up")
    await flush_redis()
    again = await post(client, "/v1/transfers", body, idem)
    assert again.status_code == 402 and again.headers["idempotent-replayed"] == "true"
    assert await balance(client, source) == 105


async def test_different_parameters_same_key_is_422(client: httpx.AsyncClient) -> None:
    idem = key()
    assert (await post(client, "/v1/wallets", {"currency": "USD"}, idem)).status_code == 201
    response = await post(client, "/v1/wallets", {"currency": "EUR"}, idem)
    assert response.status_code == 422


async def test_wallet_creation_is_idempotent_without_redis(client: httpx.AsyncClient) -> None:
    idem = key()
    first = await post(client, "/v1/wallets", {"currency": "GBP"}, idem)
    await flush_redis()
    second = await post(client, "/v1/wallets", {"currency": "GBP"}, idem)
    assert second.status_code == 201 and second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"


async def test_keys_are_scoped_to_the_merchant(client: httpx.AsyncClient, shards: Shards, gateway: str) -> None:
    from shards.control import create_merchant

    idem = key()
    mine = await post(client, "/v1/wallets", {"currency": "USD"}, idem)
    other = await create_merchant(shards.control, "other", None, 1000, 1000)
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {other.api_key}"}) as theirs:
        response = await post(theirs, "/v1/wallets", {"currency": "USD"}, idem)
    assert response.status_code == 201 and "idempotent-replayed" not in response.headers
    assert response.json()["id"] != mine.json()["id"]


@pytest.fixture(scope="module")
def redisless_gateway(migrated: object, env: dict[str, str]) -> Iterator[str]:
    port = str(free_port())
    proc = start_gateway({**env, "SHARDPAY_PORT": port, "SHARDPAY_REDIS_URL": "redis://127.0.0.1:1/0"})
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


async def test_redis_down_postgres_still_guarantees_one_effect(
    redisless_gateway: str, merchant: StackMerchant, shards: Shards, client: httpx.AsyncClient
) -> None:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=redisless_gateway, headers=headers, limits=limits, timeout=30) as down:
        for cross in (False, True):
            source = await new_wallet(client, shards, funds=100, shard=2)
            destination = await new_wallet(client, shards, shard=3 if cross else 2)
            body = {"source": source, "destination": destination, "amount": 10, "currency": "USD"}
            statuses = await race_one_key(down, body, 30)
            # Without the Redis lock, duplicates wait on the key's row in PostgreSQL and then replay.
            assert set(statuses) <= {201, 409} and statuses[201] >= 1, statuses
            assert await balance(client, source) == 90 and await balance(client, destination) == 10


async def test_a_client_that_hangs_up_mid_body_does_not_hold_its_key(
    client: httpx.AsyncClient, gateway: str, merchant: StackMerchant
) -> None:
    idem = key()
    host, port = gateway.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /v1/wallets HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {merchant.api_key}\r\n"
        f"Idempotency-Key: {idem}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        '{"currency":'.encode()
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the gateway has taken the key's lock and is waiting for the rest of the body
    writer.close()
    await writer.wait_closed()
    for _ in range(20):  # the release happens when the server notices the hang-up: moments, not the lock's TTL
        retry = await post(client, "/v1/wallets", {"currency": "USD"}, idem)
        if retry.status_code != 409:
            break
        await asyncio.sleep(0.1)
    assert retry.status_code == 201, retry.text
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/wallets",status="500"' not in metrics


def key_at_home(shards: Shards, merchant_id: str, home: int) -> str:
    """A fresh key whose durable record lives on shard ``home`` (merchant and key decide where)."""
    while True:
        candidate = key()
        if shards.index_of(idempotent.home_slot(merchant_id, candidate)) == home:
            return candidate


# (the key's home, the first source's shard, the second source's shard): every way the three can differ.
PLACES = [(0, 0, 1), (0, 1, 0), (0, 1, 2)]


@pytest.mark.parametrize(("home", "first", "second"), PLACES)
async def test_a_key_reused_with_a_source_on_another_shard_is_422_after_redis_forgot_it(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant, home: int, first: int, second: int
) -> None:
    idem = key_at_home(shards, merchant.id, home)
    destination = await new_wallet(client, shards, shard=3)
    sources = [await new_wallet(client, shards, funds=100, shard=shard) for shard in (first, second)]
    body = {"source": sources[0], "destination": destination, "amount": 10, "currency": "USD"}
    assert (await post(client, "/v1/transfers", body, idem)).status_code == 201
    await flush_redis()
    reused = await post(client, "/v1/transfers", {**body, "source": sources[1]}, idem)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused", reused.text
    assert [await balance(client, s) for s in sources] == [90, 100]
    # The first request's own retry is still answered by its record.
    await flush_redis()
    again = await post(client, "/v1/transfers", body, idem)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"


async def test_a_wallet_key_reused_for_a_transfer_elsewhere_is_422(
    client: httpx.AsyncClient, shards: Shards, merchant: StackMerchant
) -> None:
    idem = key_at_home(shards, merchant.id, 1)
    assert (await post(client, "/v1/wallets", {"currency": "USD"}, idem)).status_code == 201
    source = await new_wallet(client, shards, funds=100, shard=2)
    destination = await new_wallet(client, shards, shard=2)
    await flush_redis()
    body = {"source": source, "destination": destination, "amount": 10, "currency": "USD"}
    reused = await post(client, "/v1/transfers", body, idem)
    assert reused.status_code == 422, reused.text
    assert await balance(client, source) == 100


async def test_without_redis_one_key_raced_with_sources_on_every_shard_moves_money_once(
    redisless_gateway: str, merchant: StackMerchant, shards: Shards, client: httpx.AsyncClient
) -> None:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    destination = await new_wallet(client, shards, shard=0)
    sources = [await new_wallet(client, shards, funds=100, shard=shard) for shard in (0, 1, 2, 3) for _ in range(3)]
    idem = key()
    async with httpx.AsyncClient(base_url=redisless_gateway, headers=headers, timeout=30) as down:
        bodies = [{"source": s, "destination": destination, "amount": 10, "currency": "USD"} for s in sources]
        responses = await asyncio.gather(*(post(down, "/v1/transfers", body, idem) for body in bodies))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[201] == 1 and statuses[422] == len(sources) - 1, statuses
    assert sorted([await balance(client, s) for s in sources]) == [90] + [100] * (len(sources) - 1)
    assert await balance(client, destination) == 10
