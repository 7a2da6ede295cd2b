"""Fixtures for the event-stream tests, on real PostgreSQL and RabbitMQ.

Everything is private to these tests: databases prefixed ``shardpay_test_events`` and a RabbitMQ vhost of
the same name, so other people's gateways and consumers never see (or eat) our messages.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from events_support import VHOST, WebhookReceiver, events_env

from events import topology
from shardpay.config import Settings
from shards.control import NewMerchant, create_merchant
from shards.migrate import migrate
from tests.conftest import drop_databases


async def _ensure_vhost() -> None:
    """Create the tests' private vhost once per machine (a broker refuses a missing vhost in ways that differ
    between versions, so ask the broker what it has rather than reading the refusal)."""
    listed = await _rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers")
    if VHOST not in listed.split():
        await _rabbitmqctl("add_vhost", VHOST)
        await _rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")


async def _rabbitmqctl(*args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


@pytest.fixture(scope="session")
async def settings() -> Settings:
    settings = Settings.from_env(events_env())
    await _ensure_vhost()
    # Fresh databases every session, like the rest of the suite: a schema some other checkout migrated these
    # databases to (a migration since renamed or dropped) must not decide what these tests see.
    await drop_databases(settings)
    await migrate(settings)
    return settings


@pytest.fixture(scope="session")
async def control(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.control_dsn, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def shard_pools(settings: Settings) -> AsyncIterator[list[asyncpg.Pool]]:
    pools = []
    for dsn in settings.shard_dsns:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert pool is not None
        pools.append(pool)
    yield pools
    for pool in pools:
        await pool.close()


@pytest.fixture(scope="session")
async def amqp(settings: Settings) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(settings.amqp_url, timeout=5)
    yield connection
    await connection.close()


@pytest.fixture
async def channel(amqp: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """A fresh channel per test: a failed passive declare closes the channel it ran on."""
    channel = await amqp.channel()
    yield channel
    if not channel.is_closed:
        await channel.close()


@pytest.fixture
async def clean(
    settings: Settings, control: asyncpg.Pool, shard_pools: list[asyncpg.Pool], channel: AbstractChannel
) -> None:
    """Empty every table and queue this suite uses (the queues are deleted: the code under test declares)."""
    for pool in shard_pools:
        await pool.execute("TRUNCATE outbox")
    await control.execute("TRUNCATE webhook_deliveries, analytics_minute, analytics_processed, api_keys, merchants")
    for name in topology.queue_names(topology.delays(settings)):
        await channel.queue_delete(name)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def make_merchant(control: asyncpg.Pool) -> Callable[[str, str | None], Awaitable[NewMerchant]]:
    async def make(name: str, webhook_url: str | None) -> NewMerchant:
        return await create_merchant(control, name, webhook_url, 100, 200)

    return make
