"""Reconciliation end to end, on a stack of its own: databases ``<test prefix>_rc_*``, its own PSP simulator,
gateway and executor. A day's settlement file holds every movement of that day, so these tests must not see the
rest of the suite's traffic (nor leave theirs for it)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio

from shardpay.config import Settings
from shards.control import create_merchant
from shards.migrate import migrate
from shards.pools import Shards, open_shards
from tests.conftest import (
    TEST_PREFIX,
    Executor,
    StackMerchant,
    drop_databases,
    free_port,
    psp_stack_env,
    stack_env,
    start_gateway,
    stop_process,
)  # fmt: skip
from tests.integration.payments.flows import FAULTS_OFF
from tests.psp_process import SimProcess

RC_PREFIX = f"{TEST_PREFIX}_rc"


@pytest.fixture(scope="package")
def rc_env() -> dict[str, str]:
    port = free_port()
    # The executor asks the PSP about a pending charge only after SWEEP_AFTER: with the PSP's webhook dropped, a
    # settled charge stays 'processing' in shardpay for the whole test, as after a lost webhook in production.
    psp = psp_stack_env(port, SHARDPAY_PSP_DSN=f"postgresql://postgres@127.0.0.1:5432/{RC_PREFIX}_psp",
                        SHARDPAY_PSP_SWEEP_AFTER="600")  # fmt: skip
    return stack_env(SHARDPAY_PORT=str(port), SHARDPAY_DB_PREFIX=RC_PREFIX, **psp)


@pytest.fixture(scope="package")
def rc_settings(rc_env: dict[str, str]) -> Settings:
    return Settings.from_env(rc_env)


@pytest_asyncio.fixture(scope="package")
async def rc_migrated(rc_settings: Settings) -> Settings:
    await drop_databases(rc_settings)
    await drop_databases(rc_settings, rc_settings.psp_dsn)
    await migrate(rc_settings)
    return rc_settings


@pytest_asyncio.fixture(scope="package")
async def rc_shards(rc_migrated: Settings) -> AsyncIterator[Shards]:
    async with open_shards(rc_migrated, pool_max=4) as opened:
        yield opened


@pytest.fixture(scope="package")
def rc_sim(rc_migrated: Settings, rc_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sim = SimProcess(rc_env, str(tmp_path_factory.mktemp("rc-psp") / "psp-sim.log"))
    sim.start()
    yield sim.url
    sim.stop()


@pytest.fixture(scope="package")
def rc_gateway(rc_migrated: Settings, rc_env: dict[str, str], rc_sim: str) -> Iterator[str]:
    proc = start_gateway(rc_env)
    yield f"http://127.0.0.1:{rc_env['SHARDPAY_PORT']}"
    stop_process(proc)


@pytest.fixture(scope="package")
def rc_executor(rc_migrated: Settings, rc_env: dict[str, str], rc_sim: str) -> Iterator[Executor]:
    running = Executor(rc_env)
    running.start()
    yield running
    running.stop()


@pytest_asyncio.fixture
async def sim(rc_sim: str) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's own surface, every fault off before and after the test."""
    async with httpx.AsyncClient(base_url=rc_sim, timeout=30) as http:
        assert (await http.put("/sim/faults", json=FAULTS_OFF)).status_code == 200
        yield http
        assert (await http.put("/sim/faults", json=FAULTS_OFF)).status_code == 200


@pytest_asyncio.fixture
async def rc_merchant(rc_shards: Shards) -> StackMerchant:
    created = await create_merchant(rc_shards.control, "reconciled merchant", None, 100_000, 100_000)
    return StackMerchant(created.merchant.id, created.api_key, created.webhook_secret)


@pytest_asyncio.fixture
async def rc_client(rc_gateway: str, rc_merchant: StackMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {rc_merchant.api_key}"}
    async with httpx.AsyncClient(base_url=rc_gateway, headers=headers, timeout=30) as http:
        yield http


def today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class Ran:
    """A finished ``shardpay reconcile``: exit status, stdout as JSON (None if it is not), stderr."""

    code: int
    out: Any
    err: str


async def reconcile(env: dict[str, str], *args: str) -> Ran:
    """``python -m shardpay reconcile ARGS`` as an operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shardpay", "reconcile", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    try:
        parsed = orjson.loads(out)
    except orjson.JSONDecodeError:
        parsed = None
    return Ran(proc.returncode, parsed, err.decode())


async def control_fetch(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.control_dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def env_with(env: dict[str, str], **overrides: str) -> dict[str, str]:
    return {**env, **overrides, "PATH": os.environ.get("PATH", "")}
