"""The test stack: its own databases (``shardpay_test_*``) and Redis database (15), and a real gateway process.

Every integration test talks to real PostgreSQL, Redis and RabbitMQ. The gateway runs as a subprocess
(``python -m shardpay serve``) exactly as in production, so concurrency tests race real HTTP requests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from shardpay import ids
from shardpay.config import Settings
from shardpay.services import wallets
from shards.control import create_merchant
from shards.migrate import migrate
from shards.pools import Shards, open_shards
from tests.psp_process import SimProcess

# Two test sessions at once (two checkouts, CI beside a developer) must not drop each other's databases.
TEST_PREFIX = os.environ.get("SHARDPAY_TEST_PREFIX", "shardpay_test")
# And their own Redis database (two sessions side by side must not flush each other's keys).
TEST_REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('SHARDPAY_TEST_REDIS_DB', '15')}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stack_env(**overrides: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHARDPAY_")}
    env = {
        **base,
        "SHARDPAY_DB_PREFIX": TEST_PREFIX,
        "SHARDPAY_SHARDS": "4",
        "SHARDPAY_REDIS_URL": TEST_REDIS_URL,
        "SHARDPAY_WORKERS": "1",
        "SHARDPAY_POOL_MAX": "6",
        "SHARDPAY_LOG_REQUESTS": "false",
        "SHARDPAY_DEFAULT_RATE": "100000",
        "SHARDPAY_DEFAULT_BURST": "100000",
        # Test webhook receivers listen on 127.0.0.1, as a local stack's do (make run sets it too).
        "SHARDPAY_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    env.update(overrides)
    return env


async def drop_databases(settings: Settings, *dsns: str) -> None:
    """Drop the control and shard databases (or just ``dsns``), whoever is connected."""
    admin = await asyncpg.connect(f"{settings.pg_server}/postgres")
    try:
        for dsn in dsns or (settings.control_dsn, *settings.shard_dsns):
            name = dsn.rsplit("/", 1)[1]
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def psp_stack_env(gateway_port: int, **overrides: str) -> dict[str, str]:
    """The stack's PSP: a simulator of its own (database ``<prefix>_psp_stack``) whose webhooks go to the gateway,
    and executors that retry, sweep and probe in fractions of a second rather than production's minutes."""
    port = free_port()
    return {
        "SHARDPAY_PSP_PORT": str(port),
        "SHARDPAY_PSP_URL": f"http://127.0.0.1:{port}",
        "SHARDPAY_PSP_DSN": f"postgresql://postgres@127.0.0.1:5432/{TEST_PREFIX}_psp_stack",
        "SHARDPAY_PSP_WEBHOOK_URL": f"http://127.0.0.1:{gateway_port}/v1/webhooks/psp",
        "SHARDPAY_PSP_WEBHOOK_BACKOFF": "0.2,0.5,1,2,5,10",
        "SHARDPAY_PSP_TIMEOUT": "2",
        "SHARDPAY_PSP_LEASE": "5",
        "SHARDPAY_PSP_SWEEP_AFTER": "2",
        "SHARDPAY_PSP_SWEEP_GRACE": "1",
        "SHARDPAY_PSP_RETRY_BASE": "0.1",
        "SHARDPAY_PSP_RETRY_CAP": "1",
        "SHARDPAY_PSP_BREAKER_COOLDOWN": "1",
        "SHARDPAY_EXECUTOR_POLL": "0.02",
        **overrides,
    }


@pytest.fixture(scope="session")
def env() -> dict[str, str]:
    port = free_port()
    return stack_env(SHARDPAY_PORT=str(port), **psp_stack_env(port))


@pytest.fixture(scope="session")
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest_asyncio.fixture(scope="session")
async def migrated(settings: Settings) -> Settings:
    await drop_databases(settings)
    await migrate(settings)
    return settings


@pytest_asyncio.fixture(scope="session")
async def shards(migrated: Settings) -> AsyncIterator[Shards]:
    async with open_shards(migrated, pool_max=8) as opened:
        yield opened


def start_gateway(env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "shardpay", "serve"], env=env)
    url = f"http://127.0.0.1:{env['SHARDPAY_PORT']}/healthz"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start within 20 s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def stack_sim(
    migrated: Settings, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimProcess]:
    """The stack's PSP simulator, from a fresh database."""
    asyncio.run(drop_databases(migrated, migrated.psp_dsn))
    sim = SimProcess(env, str(tmp_path_factory.mktemp("psp") / "psp-sim.log"))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def gateway(migrated: Settings, env: dict[str, str], stack_sim: SimProcess) -> Iterator[str]:
    proc = start_gateway(env)
    yield f"http://127.0.0.1:{env['SHARDPAY_PORT']}"
    stop_process(proc)


class Executor:
    """``python -m shardpay execute``, restartable, killable."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **overrides: str) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen([sys.executable, "-m", "shardpay", "execute"], env={**self.env, **overrides})

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no goodbye, work in flight stays claimed until its lease runs out
        self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def executor(migrated: Settings, env: dict[str, str], stack_sim: SimProcess) -> Iterator[Executor]:
    """The stack's PSP executor, which a test may kill and start again (it is running when a test starts)."""
    running = Executor(env)
    running.start()
    yield running
    running.stop()


@dataclass(frozen=True)
class StackMerchant:
    id: str
    api_key: str
    webhook_secret: str


@pytest_asyncio.fixture
async def merchant(shards: Shards) -> StackMerchant:
    created = await create_merchant(shards.control, "test merchant", None, 100_000, 100_000)
    return StackMerchant(created.merchant.id, created.api_key, created.webhook_secret)


@pytest_asyncio.fixture
async def client(gateway: str, merchant: StackMerchant) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30, limits=limits) as http:
        yield http


_keys = iter(range(10**9))


def key() -> str:
    """A fresh idempotency key."""
    return f"test-{os.getpid()}-{time.time_ns()}-{next(_keys)}"


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any], idem: str | None = None) -> httpx.Response:
    return await client.post(path, json=body, headers={"Idempotency-Key": idem or key()})


async def new_wallet(client: httpx.AsyncClient, shards: Shards, funds: int = 0, currency: str = "USD",
                     shard: int | None = None) -> str:  # fmt: skip
    """A wallet (on ``shard`` if given) holding ``funds``."""
    for _ in range(200):
        response = await post(client, "/v1/wallets", {"currency": currency})
        assert response.status_code == 201, response.text
        wallet_id: str = response.json()["id"]
        if shard is None or shards.index_of(int(wallet_id[4:8], 16)) == shard:
            break
    else:
        raise AssertionError(f"no wallet landed on shard {shard}")
    if funds:
        await wallets.credit(shards, wallet_id, funds, "test funding")
    return wallet_id


async def settled(shards: Shards, *transfer_ids: str, within: float = 10.0) -> None:
    """Wait until leg 3 has run for each cross-shard transfer: a 201 comes once leg 2 has committed, and leg 3
    (settling transit on the source shard) follows in that shard's next tick."""
    deadline = time.monotonic() + within
    for transfer_id in transfer_ids:
        slot = ids.parse(transfer_id, "tr")
        assert slot is not None
        pool = shards.pool(shards.index_of(slot))
        query = "SELECT saga_state FROM transfers WHERE id = $1"
        while await pool.fetchval(query, transfer_id) == "debited":
            assert time.monotonic() < deadline, f"{transfer_id} still waits for leg 3 after {within} s"
            await asyncio.sleep(0.01)


async def audit_clean(settings: Settings) -> dict[str, Any]:
    from shards.audit import audit

    report = await audit(settings)
    assert report["ok"], report
    return report
