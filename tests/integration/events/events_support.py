"""Helpers for the event-stream tests: outbox rows, a webhook receiver, a cuttable TCP proxy, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel

from events.consumer import Handler, Incoming, Outcome
from shardpay import ids
from shardpay.domain.events import render_event

Runner = Callable[[asyncio.Event], Awaitable[None]]
VHOST = f"{os.environ.get('SHARDPAY_TEST_PREFIX', 'shardpay_test')}_events"
ENV = {
    "SHARDPAY_DB_PREFIX": VHOST,
    "SHARDPAY_SHARDS": "2",
    "SHARDPAY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{VHOST}",
    "SHARDPAY_WEBHOOK_BACKOFF": "0.2,0.4,0.8",
    "SHARDPAY_WEBHOOK_TIMEOUT": "2",
    "SHARDPAY_DB_TIMEOUT": "5",
    # The receivers listen on 127.0.0.1; tests of the refusal set it false themselves.
    "SHARDPAY_WEBHOOK_ALLOW_PRIVATE": "true",
}


def events_env() -> dict[str, str]:
    """The settings' environment; SHARDPAY_PG may point the tests at another server."""
    inherited = {k: v for k, v in os.environ.items() if k == "SHARDPAY_PG"}
    return {**inherited, **ENV}


@dataclass(frozen=True)
class Outgoing:
    event_id: str
    merchant: str
    type: str
    body: str
    amount: int | None = None
    currency: str | None = None


def transfer_event(merchant: str, amount: int, currency: str = "USD", created: int | None = None) -> Outgoing:
    slot = random.randrange(ids.SLOTS)
    obj = {
        "id": ids.new_id("tr", slot), "object": "transfer", "source": ids.new_id("wal", slot),
        "destination": ids.new_id("wal", slot), "amount": amount, "currency": currency,
        "description": None, "status": "succeeded", "created": created or int(time.time()),
    }  # fmt: skip
    event_id, body = render_event("transfer.succeeded", merchant, "req_test", obj, slot, created)
    return Outgoing(event_id, merchant, "transfer.succeeded", body, amount, currency)


def wallet_event(merchant: str) -> Outgoing:
    slot = random.randrange(ids.SLOTS)
    obj = {"id": ids.new_id("wal", slot), "object": "wallet", "currency": "USD", "available": 0, "pending": 0}
    event_id, body = render_event("wallet.created", merchant, "req_test", obj, slot)
    return Outgoing(event_id, merchant, "wallet.created", body)


async def insert_events(pool: asyncpg.Pool, events: list[Outgoing]) -> None:
    await pool.executemany(
        "INSERT INTO outbox (event_id, merchant_id, type, body) VALUES ($1, $2, $3, $4)",
        [(e.event_id, e.merchant, e.type, e.body) for e in events],
    )


async def unpublished(pools: list[asyncpg.Pool]) -> int:
    counts = [await p.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") for p in pools]
    return sum(counts)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, running: Running | None = None
) -> None:
    """Poll ``predicate`` every 20 ms; fail the test after ``within`` seconds (or if a runner died)."""
    deadline = time.monotonic() + within
    while not await predicate():
        if running is not None:
            running.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Counting:
    """Wraps a consumer's batch handler and notes the id of every event it finished handling, so a test knows
    when a duplicate has been seen."""

    handler: Handler
    handled: list[str] = field(default_factory=list)

    async def __call__(self, batch: Sequence[Incoming], channel: AbstractChannel) -> Sequence[Outcome]:
        outcomes = await self.handler(batch, channel)
        self.handled.extend(item.event.id for item in batch)
        return outcomes

    async def seen(self, count: int) -> bool:
        return len(self.handled) >= count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Running:
    """Runners sharing one stop event, stopped (and their failures surfaced) on exit."""

    def __init__(self, runners: tuple[Runner, ...]) -> None:
        self.stop = asyncio.Event()
        self.tasks = [asyncio.ensure_future(runner(self.stop)) for runner in runners]

    def check(self) -> None:
        for task in self.tasks:
            if task.done():
                raise AssertionError(f"a runner ended early: {task.exception() or 'returned'}")

    async def shutdown(self, within: float = 15.0) -> float:
        """Set stop and wait; how long the runners took to finish."""
        started = time.monotonic()
        self.stop.set()
        done, pending = await asyncio.wait(self.tasks, timeout=within)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert not pending, "runners did not stop within the timeout"
        for task in done:
            task.result()
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def running(*runners: Runner) -> AsyncIterator[Running]:
    group = Running(runners)
    try:
        yield group
    finally:
        await group.shutdown()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class WebhookReceiver:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) that can fail the first N requests."""

    fail_first: int = 0
    always_fail: bool = False
    redirect_to: str | None = None  # answer every request 307 to there
    tls: ssl.SSLContext | None = None  # serve HTTPS with it
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def event_ids(self, status: int | None = None) -> list[str]:
        import orjson

        return [orjson.loads(r.body)["id"] for r in self.received if status is None or r.status == status]

    def _status(self) -> int:
        if self.redirect_to is not None:
            return 307
        failing = self.always_fail or self.fail_first > 0
        self.fail_first = max(0, self.fail_first - 1)
        return 500 if failing else 200

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while request := await _read_request(reader):
                status = self._status()
                self.received.append(Received(request[0], request[1], status, time.time()))
                location = f"Location: {self.redirect_to}\r\n" if self.redirect_to else ""
                writer.write(f"HTTP/1.1 {status} X\r\n{location}Content-Length: 2\r\n\r\nok".encode())
                await writer.drain()
        writer.close()


@dataclass
class HangingReceiver:
    """An endpoint that reads each request and never answers (until closed): a merchant's server that hangs."""

    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    def event_ids(self) -> list[str]:
        import orjson

        return [orjson.loads(r.body)["id"] for r in self.received]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if request := await _read_request(reader):
                self.received.append(Received(request[0], request[1], 0, time.time()))
            await reader.read()  # until the client gives up and closes
        self._writers.discard(writer)
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return headers, body


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut`` drops every connection and stops listening, like a
    broker restart, without touching the broker other people are using."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


def row_dict(row: Any) -> dict[str, Any]:
    return dict(row) if row is not None else {}
