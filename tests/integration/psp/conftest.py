"""The PSP simulator as a real process on a free port, against its own database (``<SHARDPAY_TEST_PREFIX>_psp``),
with a webhook receiver run by the tests; and the adapter pointed at it. Each test starts from ``/sim/reset``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

import psp
from psp.base import Psp
from shardpay.config import Settings
from tests.conftest import TEST_PREFIX, free_port, stack_env
from tests.psp_process import SimProcess


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """shardpay's webhook endpoint, as far as the simulator can tell: answers 200, or 500 while told to fail."""

    fail_first: int = 0
    always_fail: bool = False
    # While hanging, requests are read and held unanswered (a receiver that hangs) until ``unhang``.
    hanging: bool = False
    _unhung: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def reset(self) -> None:
        self.fail_first, self.always_fail, self.received = 0, False, []
        self.unhang()

    def hang(self) -> None:
        self.hanging = True
        self._unhung.clear()

    def unhang(self) -> None:
        self.hanging = False
        self._unhung.set()

    def events(self, event_type: str | None = None, status: int = 200) -> list[dict[str, Any]]:
        return [r.event for r in self.received if r.status == status and event_type in (None, r.event["type"])]

    async def wait_for(self, count: int, event_type: str | None = None, within: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.events(event_type)) < count:
            assert time.monotonic() < deadline, f"{len(self.events(event_type))} of {count} {event_type} webhooks"
            await asyncio.sleep(0.02)
        return self.events(event_type)

    def _status(self) -> int:
        failing = self.always_fail or self.fail_first > 0
        self.fail_first = max(0, self.fail_first - 1)
        return 500 if failing else 200

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while not reader.at_eof():
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.hanging:
                    await self._unhung.wait()
                    break  # this request is never answered: the connection is closed instead
                status = self._status()
                self.received.append(Received(headers, body, status, time.time()))
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
                await writer.drain()
        writer.close()


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    listening = Receiver()
    await listening.start()
    yield listening
    listening.close()


@pytest.fixture(scope="session")
def psp_env(receiver: Receiver) -> dict[str, str]:
    port = free_port()
    return stack_env(
        SHARDPAY_PSP_PORT=str(port),
        SHARDPAY_PSP_URL=f"http://127.0.0.1:{port}",
        SHARDPAY_PSP_WEBHOOK_URL=f"http://127.0.0.1:{receiver.port}/v1/webhooks/psp",
        SHARDPAY_PSP_WEBHOOK_BACKOFF="0.2,0.4,0.8",
        SHARDPAY_PSP_TIMEOUT="2",
        SHARDPAY_PSP_SECRET_KEY="sk_sim_test",
        SHARDPAY_PSP_WEBHOOK_SECRET="whsec_sim_test",
        SHARDPAY_LOG_REQUESTS="true",
    )


@pytest.fixture(scope="session")
def psp_settings(psp_env: dict[str, str]) -> Settings:
    settings = Settings.from_env(psp_env)
    assert settings.psp_dsn.endswith(f"/{TEST_PREFIX}_psp")
    return settings


@pytest.fixture(scope="session")
def sim(
    psp_env: dict[str, str], psp_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimProcess]:
    asyncio.run(_drop(psp_settings))
    process = SimProcess(psp_env, str(tmp_path_factory.mktemp("psp") / "psp-sim.log"))
    process.start()
    yield process
    process.stop()


async def _drop(settings: Settings) -> None:
    admin = await asyncpg.connect(f"{settings.pg_server}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{settings.psp_dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def http(sim: SimProcess, psp_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A raw client with the key, for what the adapter does not say (bad input, headers, the hosted page)."""
    headers = {"Authorization": f"Bearer {psp_settings.psp_secret_key}"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=sim.url, headers=headers, timeout=30, limits=limits) as client:
        yield client


@pytest.fixture(autouse=True)
async def fresh(request: pytest.FixtureRequest) -> None:
    """Every test that uses the simulator starts with no records, events or faults, and an empty inbox."""
    if "sim" not in request.fixturenames:
        return
    sim: SimProcess = request.getfixturevalue("sim")
    receiver: Receiver = request.getfixturevalue("receiver")
    async with httpx.AsyncClient(base_url=sim.url) as client:
        assert (await client.post("/sim/reset")).status_code == 200
    # A delivery of the last test's may still be on its way: let it land before the inbox is emptied.
    await asyncio.sleep(0.15)
    receiver.reset()


@pytest.fixture
async def adapter(sim: SimProcess, psp_settings: Settings) -> AsyncIterator[Psp]:
    connected = psp.connect(psp_settings)
    yield connected
    await connected.aclose()


@pytest.fixture
async def db(sim: SimProcess, psp_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The simulator's own database, for a test that needs to look behind its API (or seed it fast)."""
    conn = await asyncpg.connect(psp_settings.psp_dsn)
    yield conn
    await conn.close()
