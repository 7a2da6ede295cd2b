"""Redis answering errors instead of going away: every error reply takes the outage path, never a 500, and a
request that gave up on Redis leaves no lock behind for its retry.

Each test runs its own redis-server (a real one, on a free port), so that filling its memory, making it a
replica or revoking its scripts touches nobody else's Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import redis.exceptions

from gateway import edge
from idempotency import State, Stored
from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import StackMerchant, free_port, key, new_wallet, start_gateway, stop_process


@pytest.fixture
def redis_port() -> Iterator[int]:
    port = free_port()
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is installed by infra/services.sh"
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--enable-debug-command", "yes"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "private redis-server did not start"
        time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


@pytest_asyncio.fixture
async def admin(redis_port: int) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=redis_port, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
def gateway_on(migrated: Settings, env: dict[str, str], redis_port: int) -> Iterator[str]:
    proc = start_gateway({**env, "SHARDPAY_PORT": str(port := free_port()),
                          "SHARDPAY_REDIS_URL": f"redis://gw@127.0.0.1:{redis_port}/0"})  # fmt: skip
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


def _client(url: str, merchant: StackMerchant) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {merchant.api_key}"}, timeout=15)


async def _writes_and_reads_answer(url: str, merchant: StackMerchant, shards: Shards) -> None:
    """Writes succeed (rate limits fail open, idempotency on PostgreSQL), replays replay, reads read."""
    async with _client(url, merchant) as http:
        k = key()
        created = await http.post("/v1/wallets", json={"currency": "USD"}, headers={"Idempotency-Key": k})
        assert created.status_code == 201, created.text
        again = await http.post("/v1/wallets", json={"currency": "USD"}, headers={"Idempotency-Key": k})
        assert (again.status_code, again.json()) == (201, created.json())
        reused = await http.post("/v1/wallets", json={"currency": "EUR"}, headers={"Idempotency-Key": k})
        assert reused.status_code == 422, reused.text
        read = await http.get(f"/v1/wallets/{created.json()['id']}")
        assert read.status_code == 200, read.text
        source = await new_wallet(http, shards, funds=1000)
        moved = await http.post(
            "/v1/transfers", json={"source": source, "destination": created.json()["id"], "amount": 100,
                                   "currency": "USD"}, headers={"Idempotency-Key": key()},
        )  # fmt: skip
        assert moved.status_code == 201, moved.text


@pytest.fixture
async def _gw_user(admin: aioredis.Redis) -> None:
    await admin.execute_command("ACL", "SETUSER", "gw", "on", "nopass", "~*", "+@all")


@pytest.mark.usefixtures("_gw_user")
async def test_out_of_memory_replies_fail_open_not_500(
    admin: aioredis.Redis, gateway_on: str, merchant: StackMerchant, shards: Shards
) -> None:
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")  # every write is refused: OOM command not allowed
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        await admin.set("probe", "x")
    await _writes_and_reads_answer(gateway_on, merchant, shards)


@pytest.mark.usefixtures("_gw_user")
async def test_readonly_replies_after_a_failover_fail_open_not_500(
    admin: aioredis.Redis, gateway_on: str, merchant: StackMerchant, shards: Shards
) -> None:
    await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a replica of nothing: read-only
    await _writes_and_reads_answer(gateway_on, merchant, shards)


async def test_noperm_replies_fail_open_not_500(
    admin: aioredis.Redis, gateway_on: str, merchant: StackMerchant, shards: Shards
) -> None:
    await admin.execute_command("ACL", "SETUSER", "gw", "on", "nopass", "~*", "+@all", "-evalsha", "-eval")
    await _writes_and_reads_answer(gateway_on, merchant, shards)


@pytest.mark.usefixtures("_gw_user")
async def test_error_replies_with_rate_limits_failing_closed_answer_503(
    admin: aioredis.Redis, migrated: Settings, env: dict[str, str], redis_port: int, merchant: StackMerchant
) -> None:
    await admin.config_set("maxmemory", "1")
    port = free_port()
    proc = start_gateway({**env, "SHARDPAY_PORT": str(port), "SHARDPAY_RATELIMIT_FAIL_OPEN": "false",
                          "SHARDPAY_REDIS_URL": f"redis://gw@127.0.0.1:{redis_port}/0"})  # fmt: skip
    try:
        async with _client(f"http://127.0.0.1:{port}", merchant) as http:
            write = await http.post("/v1/wallets", json={"currency": "USD"}, headers={"Idempotency-Key": key()})
            read = await http.get("/v1/currencies")
        for response in (write, read):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"]["code"] == "dependency_unavailable"
    finally:
        stop_process(proc)


async def test_a_finish_that_redis_refuses_never_raises_and_gives_the_lock_back(
    admin: aioredis.Redis, redis_port: int
) -> None:
    client = aioredis.Redis(port=redis_port, socket_timeout=0.5)
    gate = edge.Edge(client, lock_ms=30_000, cache_s=60, cooldown=0.2)
    try:
        k = key()
        _, begin = await gate.write("key_f", 1000, 1000, "mer_f", k)
        assert begin is not None and begin.state is State.ACQUIRED
        await admin.config_set("maxmemory", "1")
        # The money has moved; caching its response is refused (OOM): the request still gets its answer.
        await gate.finish("mer_f", k, begin, Stored("fp", 201, b"{}"))
        assert await admin.get(f"idem:mer_f:{k}") == f"L:{begin.token}".encode()  # DEL is allowed under OOM
        await _until(lambda: admin.get(f"idem:mer_f:{k}"), None)  # given back in the background
    finally:
        await gate.close()
        await client.aclose()


async def test_a_request_that_timed_out_on_redis_leaves_no_lock_for_its_retry(
    admin: aioredis.Redis, migrated: Settings, env: dict[str, str], redis_port: int, merchant: StackMerchant
) -> None:
    port = free_port()
    proc = start_gateway({**env, "SHARDPAY_PORT": str(port), "SHARDPAY_REDIS_TIMEOUT": "0.1",
                          "SHARDPAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"})  # fmt: skip
    try:
        async with _client(f"http://127.0.0.1:{port}", merchant) as http:
            warm = await http.post("/v1/wallets", json={"currency": "USD"}, headers={"Idempotency-Key": key()})
            assert warm.status_code == 201, warm.text  # and Redis has the gateway's scripts now
            k = key()
            # Redis stalls for 0.5 s: the script call times out after 0.1 s, but Redis runs it when it wakes, so
            # the lock is taken and nobody heard. The request goes on without Redis (PostgreSQL decides it).
            sleeper = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "0.5"))
            await asyncio.sleep(0.05)
            first = await http.post("/v1/wallets", json={"currency": "USD"}, headers={"Idempotency-Key": k})
            assert first.status_code == 201, first.text
            await sleeper
            # Its retries, for longer than the edge's cooldown: each is the first answer again, never 409.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                again = await http.post("/v1/wallets", json={"currency": "USD"}, headers={"Idempotency-Key": k})
                assert (again.status_code, again.json()) == (201, first.json()), again.text
                await asyncio.sleep(0.05)
        held = await admin.get(f"idem:{merchant.id}:{k}")
        assert held is None or held.startswith(b"R:"), held  # given back (or a retry's cached answer): no lock
    finally:
        stop_process(proc)


async def _until(read: Callable[[], Awaitable[object]], expected: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if value == expected:
            return
        assert time.monotonic() < deadline, f"still {value!r}, not {expected!r}, after {within} s"
        await asyncio.sleep(0.05)
