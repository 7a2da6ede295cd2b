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

from shardpay.ha.layout import Cluster, Topology
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
    """Shard 0's replica, to pause its replay on. Patroni resumes a paused replay on its next loop (PostgreSQL 14
    and later), so the cluster is put in maintenance mode first (``patronictl pause``), and taken out after."""
    cluster = ha_topology.cluster("shard0")
    await _maintenance(cluster, True)
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{cluster.read_port}/postgres")
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()"), "the read port reached the primary"
        yield conn
        await conn.execute("SELECT pg_wal_replay_resume()")
    finally:
        await conn.close()
        await _maintenance(cluster, False)


async def _maintenance(cluster: Cluster, on: bool) -> None:
    """Set Patroni's maintenance mode and wait until every member's loop has seen it."""
    async with httpx.AsyncClient(timeout=5) as patroni:
        urls = [f"http://127.0.0.1:{cluster.rest_port(node)}" for node in cluster.nodes]
        (await patroni.patch(f"{urls[0]}/config", json={"pause": on})).raise_for_status()
        deadline = time.monotonic() + 15
        while [(await patroni.get(f"{url}/patroni")).json().get("pause", False) for url in urls] != [on] * len(urls):
            assert time.monotonic() < deadline, f"Patroni did not take maintenance mode {on} within 15 s"
            await asyncio.sleep(0.2)


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
    await asyncio.sleep(1.5)  # past the probe's cache: /metrics shows the replica behind
    assert _replica_lag((await http.get("/metrics")).text, "0") > 0
    await paused_replica.execute("SELECT pg_wal_replay_resume()")
    await _replayed(http, wallet_id, 2)
    assert await _entries(http, wallet_id) == [250, 1000]
    await asyncio.sleep(1.5)
    assert _replica_lag((await http.get("/metrics")).text, "0") == 0  # caught up: 0, however old its last replay


def _replica_lag(metrics: str, shard: str) -> float:
    prefix = f'shardpay_replica_lag_seconds{{shard="{shard}"}} '
    return float(next(line for line in metrics.splitlines() if line.startswith(prefix)).split()[-1])


async def test_a_wallet_too_new_for_the_replica_is_read_from_the_primary(
    http: httpx.AsyncClient, ha_shards: Shards, paused_replica: asyncpg.Connection
) -> None:
    await paused_replica.execute("SELECT pg_wal_replay_pause()")
    wallet_id = await new_wallet(http, ha_shards, funds=500, shard=0)
    assert await _entries(http, wallet_id) == [500]
