"""The read rule on a real streaming replica: entries lists may lag, balances never do.

Shard 0's standby is its replica (HAProxy's read port). With its replay paused (``pg_wal_replay_pause()``) a
credit commits on the primary (and is flushed to the standby, which is synchronous) but is not visible on the
replica: ``GET /v1/wallets/{id}/entries`` shows the entries from before it, ``GET /v1/wallets/{id}`` the new
balance. A wallet too new for the replica is still found (the primary is asked when the replica finds nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest_asyncio

from shardpay.ha.layout import Topology
from shardpay.services import wallets
from shards.control import create_merchant
from shards.pools import Shards
from tests.conftest import new_wallet


@pytest_asyncio.fixture
async def http(ha_topology: Topology, ha_shards: Shards) -> AsyncIterator[httpx.AsyncClient]:
    merchant = await create_merchant(ha_shards.control, "replica reader", None, 100_000, 100_000)
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=ha_topology.gateway_url, headers=headers, timeout=15) as client:
        yield client


@pytest_asyncio.fixture
async def paused_replica(ha_topology: Topology) -> AsyncIterator[asyncpg.Connection]:
    cluster = ha_topology.cluster("shard0")
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{cluster.read_port}/postgres")
    assert await conn.fetchval("SELECT pg_is_in_recovery()"), "the read port reached the primary"
    yield conn
    await conn.execute("SELECT pg_wal_replay_resume()")
    await conn.close()


async def _entries(http: httpx.AsyncClient, wallet_id: str) -> list[int]:
    answer = await http.get(f"/v1/wallets/{wallet_id}/entries")
    assert answer.status_code == 200, answer.text
    return [entry["amount"] for entry in answer.json()["data"]]


async def _replayed(http: httpx.AsyncClient, wallet_id: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(await _entries(http, wallet_id)) < count:
        assert time.monotonic() < deadline, "the replica did not catch up within 10 s"
        await asyncio.sleep(0.1)


async def test_entries_come_from_the_replica_and_balances_from_the_primary(
    http: httpx.AsyncClient, ha_shards: Shards, paused_replica: asyncpg.Connection
) -> None:
    wallet_id = await new_wallet(http, ha_shards, funds=1000, shard=0)
    await _replayed(http, wallet_id, 1)
    await paused_replica.execute("SELECT pg_wal_replay_pause()")
    await wallets.credit(ha_shards, wallet_id, 250, "after the pause")
    balance = await http.get(f"/v1/wallets/{wallet_id}")
    assert balance.json()["available"] == 1250, balance.text  # read-your-writes: the primary
    assert await _entries(http, wallet_id) == [1000]  # lag-tolerant: the replica, from before the credit
    await paused_replica.execute("SELECT pg_wal_replay_resume()")
    await _replayed(http, wallet_id, 2)
    assert await _entries(http, wallet_id) == [250, 1000]


async def test_a_wallet_too_new_for_the_replica_is_read_from_the_primary(
    http: httpx.AsyncClient, ha_shards: Shards, paused_replica: asyncpg.Connection
) -> None:
    await paused_replica.execute("SELECT pg_wal_replay_pause()")
    wallet_id = await new_wallet(http, ha_shards, funds=500, shard=0)
    assert await _entries(http, wallet_id) == [500]
