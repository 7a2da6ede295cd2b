"""/readyz and /metrics probe cheaply: at most one probe query per shard per second per gateway process, on pools
of their own (an exhausted money pool is not a shard down), bounded in time whatever a database does, and an
outbox lag estimate whose cost does not grow with the backlog.

Everything here runs on a scratch set (``<prefix>_probe_*``, two shards) that only this module's gateways touch,
so PostgreSQL's own per-table scan counters tell exactly how many probe queries reached each shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest_asyncio

from gateway.probes import APPLICATION_NAME, CACHE_PERIOD, OUTBOX_LAG, PROBE_TIMEOUT, OutboxLag, outbox_lag
from shardpay import ids
from shardpay.config import Settings
from shards.control import create_merchant
from shards.migrate import migrate
from tests.conftest import TEST_PREFIX, drop_databases, stack_env
from tests.integration.test_ops import Cuttable, by_shard, gateway_with, samples

SCRATCH_PREFIX = f"{TEST_PREFIX}_probe"
SCRATCH = {"SHARDPAY_DB_PREFIX": SCRATCH_PREFIX, "SHARDPAY_SHARDS": "2"}
# Each probe query scans the outbox twice (the newest seq, the oldest unpublished row), whatever plan it gets.
SCANS_PER_PROBE = 2
# What /metrics ran before: it reads every unpublished row.
COUNT = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


@dataclass(frozen=True)
class Scratch:
    settings: Settings
    api_key: str


@pytest_asyncio.fixture(scope="module")
async def scratch() -> AsyncIterator[Scratch]:
    settings = Settings.from_env(stack_env(**SCRATCH))
    await drop_databases(settings)
    await migrate(settings)
    control = await asyncpg.create_pool(settings.control_dsn, min_size=1, max_size=1)
    assert control is not None
    try:
        created = await create_merchant(control, "probe merchant", None, 100_000, 100_000)
    finally:
        await control.close()
    yield Scratch(settings, created.api_key)
    await drop_databases(settings)


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def outbox_scans(conn: asyncpg.Connection) -> int:
    """Scans of the outbox table by every backend that has reported its statistics (all that have exited)."""
    found: int = await conn.fetchval(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'outbox'"
    )
    return found


async def alone(conn: asyncpg.Connection, within: float = 15.0) -> None:
    """Wait until no other backend is connected to this database: a backend reports its statistics as it exits."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + within
    while await conn.fetchval(query):
        assert time.monotonic() < deadline, "other backends still connected to the scratch database"
        await asyncio.sleep(0.05)


async def test_a_burst_of_readyz_and_metrics_costs_one_probe_per_shard_per_second(scratch: Scratch) -> None:
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(connected(dsn)) for dsn in scratch.settings.shard_dsns]
        for reader in readers:
            await alone(reader)
        before = [await outbox_scans(reader) for reader in readers]
        with gateway_with(**SCRATCH) as url:
            # 200 requests at once from the client, 50 at a time on the wire: past that, this machine's client and
            # server spend seconds on connections alone (a burst of /healthz shows it too).
            limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
                started = time.monotonic()
                for _ in range(3):  # three bursts of 200 requests, half of each kind
                    replies = await asyncio.gather(*(http.get(path) for path in ("/readyz", "/metrics") * 100))
                    assert [r.status_code for r in replies] == [200] * 200, [r.text for r in replies[:2]]
                    await asyncio.sleep(0.3)
                elapsed = time.monotonic() - started
        for reader in readers:  # the gateway has stopped: its backends report their scans as they exit
            await alone(reader)
        after = [await outbox_scans(reader) for reader in readers]
    allowed = int(elapsed / CACHE_PERIOD) + 1  # a probe's answer serves every request for the next second
    for shard, (was, now) in enumerate(zip(before, after, strict=True)):
        probes = (now - was) / SCANS_PER_PROBE
        assert 1 <= probes <= allowed, f"shard {shard}: {probes} probe queries in {elapsed:.2f} s, 600 requests"


async def test_readyz_stays_ready_while_a_shards_money_pool_is_held(scratch: Scratch) -> None:
    """Shard 1's two money connections wait behind a lock; its probe, on a pool of its own, still answers."""
    unknown = ids.new_id("wal", 1)  # slot 1 is shard 1's in the even map: reading it waits on the locked table
    headers = {"Authorization": f"Bearer {scratch.api_key}"}
    dsn = scratch.settings.shard_dsns[1]
    with gateway_with(**SCRATCH, SHARDPAY_POOL_MAX="2", SHARDPAY_DB_TIMEOUT="20") as url:
        async with (
            connected(dsn) as locker, connected(dsn) as watcher,
            httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http,
        ):  # fmt: skip
            lock = locker.transaction()
            await lock.start()
            await locker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
            held = [asyncio.create_task(http.get(f"/v1/wallets/{unknown}")) for _ in range(6)]
            await waiting_on_the_lock(watcher, 2)
            started = time.monotonic()
            ready = await http.get("/readyz")
            took = time.monotonic() - started
            found = samples((await http.get("/metrics")).text)
            assert not any(task.done() for task in held)  # the pool was full all along
            await lock.rollback()  # the lock goes: the held reads finish (the wallet does not exist)
            assert [r.status_code for r in await asyncio.gather(*held)] == [404] * 6
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    assert took < PROBE_TIMEOUT, f"/readyz took {took:.2f} s with shard 1's money pool held"
    assert by_shard(found, "shardpay_shard_up") == {"0": 1.0, "1": 1.0}
    assert by_shard(found, "shardpay_shard_pool_in_use")["1"] == 2


async def waiting_on_the_lock(conn: asyncpg.Connection, count: int, within: float = 10.0) -> None:
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND application_name <> $1"
    )
    deadline = time.monotonic() + within
    while await conn.fetchval(query, APPLICATION_NAME) < count:
        assert time.monotonic() < deadline, f"fewer than {count} money connections waiting on the lock"
        await asyncio.sleep(0.05)


class Freezable(Cuttable):
    """A Cuttable that can also hang: frozen, it keeps every connection open and forwards nothing, as a server
    does that stopped answering (a stalled disk, a partition that drops packets)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.frozen = threading.Event()
        super().__init__(upstream)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:  # type: ignore[override]
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self.frozen.is_set():
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Answer:
    path: str
    status: int
    took: float  # seconds the request took
    at: float  # seconds after the freeze that it was answered
    text: str


async def answers_until(http: httpx.AsyncClient, since: float, seconds: float, done: str | None = None) -> list[Answer]:
    """/readyz and /metrics in turn for ``seconds`` after ``since`` (until /readyz answers ``done``, if given)."""
    answers: list[Answer] = []
    while time.monotonic() - since < seconds:
        for path in ("/readyz", "/metrics"):
            started = time.monotonic()
            response = await http.get(path)
            now = time.monotonic()
            answers.append(Answer(path, response.status_code, now - started, now - since, response.text))
        if done is not None and orjson.loads(answers[-2].text)["status"] == done:
            break
        await asyncio.sleep(0.1)
    return answers


async def test_a_hung_shard_is_down_in_time_never_hangs_a_probe_and_comes_back(scratch: Scratch) -> None:
    proxy = Freezable(("127.0.0.1", 5432))
    dsns = [scratch.settings.shard_dsns[0], scratch.settings.shard_dsns[1].replace(":5432/", f":{proxy.port}/")]
    bound = CACHE_PERIOD + PROBE_TIMEOUT + 0.3  # how long a cached "ready" may outlive the shard, and a margin
    with gateway_with(**SCRATCH, SHARDPAY_SHARD_DSNS=",".join(dsns)) as url:
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                assert (await http.get("/readyz")).status_code == 200  # the probe connected through the proxy
                proxy.frozen.set()
                hung = await answers_until(http, time.monotonic(), bound + 2 * CACHE_PERIOD)
                proxy.frozen.clear()  # the stuck probe connection is given up on, so the shard can be seen again
                back = await answers_until(http, time.monotonic(), 10.0, done="ready")
        finally:
            proxy.cut()
    slowest = max(hung + back, key=lambda a: a.took)
    assert slowest.took < PROBE_TIMEOUT + 0.5, f"{slowest.path} took {slowest.took:.2f} s"
    readies = [a for a in hung if a.path == "/readyz"]
    down = [a for a in readies if a.status == 503]
    assert down, "/readyz never noticed the hung shard"
    assert down[0].at < bound, f"a stale 'ready' was served {down[0].at:.2f} s after the shard hung"
    for answer in readies[readies.index(down[0]) :]:  # and once down, down: no probe that hung said otherwise
        assert answer.status == 503 and orjson.loads(answer.text)["checks"]["shard_1"] is False, answer
    assert by_shard(samples(hung[-1].text), "shardpay_shard_up") == {"0": 1.0, "1": 0.0}
    assert back[-2].status == 200, f"still not ready {back[-2].at:.1f} s after the shard answered again"
    assert back[-2].at < CACHE_PERIOD + 3 * PROBE_TIMEOUT + 0.5, back[-2]


# --- the outbox lag estimate ----------------------------------------------------------------------------------


async def insert_events(conn: asyncpg.Connection, count: int, published: bool = False) -> None:
    await conn.execute(
        "INSERT INTO outbox (event_id, merchant_id, type, body, published_at) "
        "SELECT 'evt_probe_' || gen_random_uuid(), 'mer_probe', 'wallet.created', '{}', "
        "CASE WHEN $2 THEN now() END FROM generate_series(1, $1)",
        count,
        published,
    )


@contextlib.asynccontextmanager
async def outbox_pool(scratch: Scratch, shard: int) -> AsyncIterator[asyncpg.Pool]:
    """A pool on one scratch shard whose outbox starts empty."""
    pool = await asyncpg.create_pool(scratch.settings.shard_dsns[shard], min_size=1, max_size=2)
    assert pool is not None
    try:
        await pool.execute("DELETE FROM outbox")
        yield pool
    finally:
        await pool.close()


async def unpublished(pool: asyncpg.Pool) -> int:
    found: int = await pool.fetchval(COUNT)
    return found


async def test_the_lag_estimate_is_the_count_when_seqs_are_contiguous_and_a_bound_otherwise(
    scratch: Scratch,
) -> None:
    async with outbox_pool(scratch, 0) as pool, pool.acquire() as conn:
        assert await outbox_lag(pool) == OutboxLag(0, 0.0)
        await insert_events(conn, 5, published=True)
        assert await outbox_lag(pool) == OutboxLag(0, 0.0)  # published rows are no lag
        await insert_events(conn, 7)
        await conn.execute(
            "UPDATE outbox SET created_at = now() - interval '30 seconds' "
            "WHERE seq = (SELECT min(seq) FROM outbox WHERE published_at IS NULL)"
        )
        lag = await outbox_lag(pool)
        assert lag.unpublished == await unpublished(pool) == 7 and 30 <= lag.oldest_age < 60
        # Seqs a rolled-back insert took, and a row published out of turn, still count: an upper bound.
        await rolled_back_insert(conn, 3)
        await insert_events(conn, 2)
        await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = (SELECT max(seq) FROM outbox)")
        assert await unpublished(pool) == 7 + 2 - 1
        assert (await outbox_lag(pool)).unpublished == 7 + 3 + 2  # every seq from the oldest unpublished on
        await conn.execute("UPDATE outbox SET published_at = now()")
        assert await outbox_lag(pool) == OutboxLag(0, 0.0)


async def rolled_back_insert(conn: asyncpg.Connection, count: int) -> None:
    """``count`` seqs taken and never committed, as a failed transaction leaves them."""
    with contextlib.suppress(asyncpg.DivisionByZeroError):
        async with conn.transaction():
            await insert_events(conn, count)
            await conn.execute("SELECT 1/0")


def plan_nodes(node: dict[str, Any], ancestors: tuple[str, ...] = ()) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    found = [(node, ancestors)]
    for child in node.get("Plans", []):
        found += plan_nodes(child, (*ancestors, node["Node Type"]))
    return found


async def test_the_lag_query_is_index_work_that_does_not_grow_with_the_backlog(scratch: Scratch) -> None:
    async with outbox_pool(scratch, 1) as pool, pool.acquire() as conn:
        await insert_events(conn, 1_000, published=True)
        await insert_events(conn, 200_000)
        await conn.execute("ANALYZE outbox")  # as autovacuum would have, after a backlog this size

        plan = orjson.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {OUTBOX_LAG}"))[0]["Plan"]
        scans = [(n, up) for n, up in plan_nodes(plan) if n.get("Relation Name") == "outbox"]
        assert len(scans) == SCANS_PER_PROBE, plan
        for node, ancestors in scans:  # each an index lookup that stops at its first row
            assert node["Node Type"] in ("Index Scan", "Index Only Scan") and "Limit" in ancestors, plan
            assert node["Actual Rows"] <= 1, plan
        assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 50, plan

        lag = await outbox_lag(pool)
        assert lag.unpublished == await unpublished(pool) == 200_000
        estimate = await best_of(5, lambda: outbox_lag(pool))
        count = await best_of(3, lambda: unpublished(pool))
    assert estimate * 10 < count, f"estimate {estimate * 1000:.2f} ms, count(*) {count * 1000:.2f} ms"


async def best_of(runs: int, query: Callable[[], Awaitable[object]]) -> float:
    """The fastest of ``runs`` runs, in seconds: the least disturbed by whatever else the machine is doing."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        await query()
        best = min(best, time.perf_counter() - started)
    return best
