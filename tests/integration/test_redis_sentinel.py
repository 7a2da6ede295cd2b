"""Every process's Redis client follows Sentinel (``shardpay.redis_client``): with the primary killed, Sentinel
promotes the replica and the same client object's next calls reach it, with no restart and no new settings.

A primary, a replica and a Sentinel of the test's own (real servers on free ports)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.exceptions

from shardpay import redis_client
from shardpay.config import Settings
from tests.conftest import free_port


def _server(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ping(port: int) -> bool:
    return subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG"


def _replica_known(sentinel: int) -> bool:
    found = subprocess.run(["redis-cli", "-p", str(sentinel), "SENTINEL", "replicas", "pay"], capture_output=True)
    return b"master-link-status" in found.stdout and b"s_down" not in found.stdout


def _linked(replica: int) -> bool:
    found = subprocess.run(["redis-cli", "-p", str(replica), "INFO", "replication"], capture_output=True)
    return b"master_link_status:up" in found.stdout


def _until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"the test's Redis servers: {what} not within 30 s"
        time.sleep(0.1)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[tuple[int, int, int, subprocess.Popen[bytes]]]:
    primary, replica, sentinel = free_port(), free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    follows = ["--replicaof", "127.0.0.1", str(primary)]
    procs = [_server("redis-server", "--port", str(primary), *common),
             _server("redis-server", "--port", str(replica), *follows, *common)]  # fmt: skip
    # Sentinel only once both answer and the replica is in sync: a primary it cannot reach at its start is
    # marked down, and a failover that then finds no good replica is not tried again for twice failover-timeout.
    _until("the replica in sync", lambda: _ping(primary) and _linked(replica))
    config = tmp_path / "sentinel.conf"
    config.write_text(f"port {sentinel}\nbind 127.0.0.1\nlogfile {tmp_path / 'sentinel.log'}\n"
                      f"sentinel monitor pay 127.0.0.1 {primary} 1\n"
                      "sentinel down-after-milliseconds pay 1000\nsentinel failover-timeout pay 5000\n")  # fmt: skip
    procs.append(_server("redis-sentinel", str(config)))
    # Sentinel learns of replicas from the primary's INFO: until it has, it has nobody to promote.
    _until("Sentinel knowing the replica", lambda: _ping(sentinel) and _replica_known(sentinel))
    yield primary, replica, sentinel, procs[0]
    for proc in procs:
        proc.kill()
        proc.wait()


async def test_the_client_follows_a_failover(sentinel_set: tuple[int, int, int, subprocess.Popen[bytes]]) -> None:
    primary, replica, sentinel, primary_proc = sentinel_set
    settings = Settings.from_env({
        "SHARDPAY_REDIS_SENTINELS": f"127.0.0.1:{sentinel}", "SHARDPAY_REDIS_MASTER": "pay",
        "SHARDPAY_REDIS_URL": "redis://ignored:1/3", "SHARDPAY_REDIS_TIMEOUT": "0.5",
    })  # fmt: skip
    client = redis_client.connect(settings)
    try:
        await client.set("k", "before")
        assert (await client.info("server"))["tcp_port"] == primary
        assert (await client.client_info())["db"] == 3  # the database number still comes from the URL
        primary_proc.kill()
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.set("k", "after")
                break
            except (redis.exceptions.RedisError, OSError):
                assert time.monotonic() < deadline, "the client did not reach the promoted replica in 30 s"
                await asyncio.sleep(0.2)
        assert (await client.info("server"))["tcp_port"] == replica
        assert await client.get("k") == b"after"
    finally:
        await client.aclose()
