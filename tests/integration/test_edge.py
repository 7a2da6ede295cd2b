"""The gateway's Redis edge: concurrent calls share pipelines, survive a lost script cache, and fail fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from gateway import edge
from idempotency import State, Stored
from shardpay.config import Settings
from tests.conftest import free_port, key


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
    yield redis
    await redis.aclose()


async def test_concurrent_calls_share_pipelines_and_each_gets_its_own_reply(
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real = edge.pipelined

    async def counting(redis: aioredis.Redis, calls: Sequence[edge.Call]) -> list[Any]:
        sizes.append(len(calls))
        return await real(redis, calls)

    monkeypatch.setattr(edge, "pipelined", counting)
    gate = edge.Edge(client, lock_ms=5_000, cache_s=60)
    keys = [key() for _ in range(200)]
    first = await asyncio.gather(*(gate.write("key_edge", 1_000_000, 1_000_000, "mer_edge", k) for k in keys))
    assert all(begin is not None and begin.state is State.ACQUIRED for _, begin in first)
    assert sum(sizes) == 200 and len(sizes) < 200, sizes  # some calls went together
    # The same keys again, concurrently: each call sees its own key's lock, none another's.
    again = await asyncio.gather(*(gate.write("key_edge", 1_000_000, 1_000_000, "mer_edge", k) for k in keys))
    assert all(begin is not None and begin.state is State.LOCKED for _, begin in again)
    # Finish half with a cached response: each key then replays exactly its own.
    begins = [begin for _, begin in first[:100] if begin is not None]
    await asyncio.gather(*(gate.finish("mer_edge", k, begin, Stored("fp", 201, f'{{"k":"{k}"}}'.encode()))
                           for k, begin in zip(keys[:100], begins, strict=True)))  # fmt: skip
    cached = await asyncio.gather(*(gate.write("key_edge", 1_000_000, 1_000_000, "mer_edge", k) for k in keys[:100]))
    for k, (_, begin) in zip(keys[:100], cached, strict=True):
        assert begin is not None and begin.state is State.CACHED and begin.stored is not None
        assert begin.stored.body == f'{{"k":"{k}"}}'.encode()


async def test_a_server_that_lost_its_scripts_still_answers(client: aioredis.Redis) -> None:
    gate = edge.Edge(client, lock_ms=5_000, cache_s=60)
    await client.script_flush()
    replies = await asyncio.gather(*(gate.write("key_edge", 1_000_000, 1_000_000, "mer_edge", key()) for _ in range(5)))
    assert all(begin is not None and begin.state is State.ACQUIRED for _, begin in replies)


async def test_unreachable_redis_answers_none_at_once_and_cools_down() -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    gate = edge.Edge(dead, lock_ms=5_000, cache_s=60, cooldown=30)
    try:
        replies = await asyncio.gather(*(gate.write("key_edge", 10, 10, "mer_edge", key()) for _ in range(20)))
        # Each call was tried, so each may have taken its lock: each is UNKNOWN, for its finish to give it back.
        assert all(reply is None and begin is not None and begin.state is State.UNKNOWN for reply, begin in replies)
        assert await gate.write("key_edge", 10, 10, "mer_edge", key()) == (None, None)  # skipped: nothing taken
        assert not gate.available
        assert await gate.read("key_edge", 10, 10) is None  # skipped while cooling down
    finally:
        await dead.aclose()
