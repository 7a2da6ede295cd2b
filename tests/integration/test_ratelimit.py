"""GCRA per API key: headers on every response, 429 with Retry-After past the burst."""

from __future__ import annotations

import asyncio

import httpx

from shards.control import create_merchant
from shards.pools import Shards
from tests.conftest import post


async def test_burst_then_429(gateway: str, shards: Shards) -> None:
    slow = await create_merchant(shards.control, "slow", None, rate=1, burst=5)
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {slow.api_key}"}) as client:
        responses = [await client.get("/v1/currencies") for _ in range(7)]
        statuses = [r.status_code for r in responses]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429], statuses
        remaining = [int(r.headers["ratelimit-remaining"]) for r in responses[:5]]
        assert remaining == [4, 3, 2, 1, 0]
        limited = responses[5]
        assert limited.headers["ratelimit-limit"] == "5"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        # A POST that is rate-limited moves nothing and does not take its idempotency key.
        blocked = await post(client, "/v1/wallets", {"currency": "USD"}, "after-limit")
        assert blocked.status_code == 429
        await asyncio.sleep(1.1)
        allowed = await post(client, "/v1/wallets", {"currency": "USD"}, "after-limit")
        assert allowed.status_code == 201 and "idempotent-replayed" not in allowed.headers


async def test_limits_are_per_merchant(gateway: str, shards: Shards) -> None:
    first = await create_merchant(shards.control, "one", None, rate=1, burst=2)
    second = await create_merchant(shards.control, "two", None, rate=1, burst=2)
    for merchant in (first, second):
        headers = {"Authorization": f"Bearer {merchant.api_key}"}
        async with httpx.AsyncClient(base_url=gateway, headers=headers) as client:
            assert [(await client.get("/v1/currencies")).status_code for _ in range(3)] == [200, 200, 429]
