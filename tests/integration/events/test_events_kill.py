"""kill -9 the relay and the consumers mid-stream, as real processes: nothing is lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel
from events_support import Outgoing, WebhookReceiver, events_env, insert_events, transfer_event, unpublished
from events_support import wait_until as _wait_until

from events import topology
from events.signing import verify
from shardpay.config import Settings
from shards.control import NewMerchant

pytestmark = pytest.mark.usefixtures("clean")
CLI = Path(sys.executable).parent / "shardpay"
CURRENCIES = ("USD", "EUR", "JPY")


class Child:
    """One ``shardpay`` subprocess, its JSON-lines stderr kept in a file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name, self.argv, self.log = name, argv, log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDPAY_")} | events_env()
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(str(CLI), *self.argv, env=env, stdout=log, stderr=log)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no cleanup, no acks, no commits
        await self.proc.wait()

    async def terminate(self) -> int | None:
        """SIGTERM and the exit status, or None if it did not stop within 10 s (then it is killed)."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            await self.kill()
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def wave(merchants: list[str], count: int) -> list[Outgoing]:
    """Three in four events move money (random amounts and currencies); the rest are wallet.created."""
    from events_support import wallet_event

    return [
        wallet_event(merchants[i % 3])
        if i % 4 == 3
        else transfer_event(merchants[i % 3], random.randint(1, 100_000), CURRENCIES[i % len(CURRENCIES)])
        for i in range(count)
    ]


async def insert_wave(pools: list[asyncpg.Pool], events: list[Outgoing]) -> None:
    await insert_events(pools[0], events[0::2])
    await insert_events(pools[1], events[1::2])


def scalar(pool: asyncpg.Pool, sql: str) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        return int(await pool.fetchval(sql))

    return read


async def test_kill_9_mid_stream_loses_nothing_and_applies_everything_once(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool, channel: AbstractChannel,
    receiver: WebhookReceiver, make_merchant: Callable[[str, str | None], Awaitable[NewMerchant]], tmp_path: Path,
) -> None:  # fmt: skip
    hooked = [await make_merchant(f"hooked-{i}", receiver.url) for i in range(2)]
    silent = await make_merchant("silent", None)
    merchants = [hooked[0].merchant.id, hooked[1].merchant.id, silent.merchant.id]
    receiver.fail_first = 25  # some deliveries go through the delay queues while processes die
    first, second = wave(merchants, 1000), wave(merchants, 1000)
    everything = first + second
    money = [e for e in everything if e.amount is not None]
    counted = scalar(control, "SELECT count(*) FROM analytics_processed")
    delivered = scalar(control, "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
    hooked_events = [e for e in everything if e.merchant != silent.merchant.id]

    children = {
        "relay": Child("relay", ["relay", "--batch-size", "10"], tmp_path),
        "analytics": Child("analytics", ["consume", "analytics"], tmp_path),
        "notifications": Child("notifications", ["consume", "notifications"], tmp_path),
    }

    async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
        async def check() -> bool:
            dead = [name for name, child in children.items() if not child.alive()]
            assert not dead, f"{dead} exited early; see {tmp_path}"
            return await predicate()

        await _wait_until(check, within, what)

    await insert_wave(shard_pools, first)
    try:
        for child in children.values():
            await child.start()

        # 1. The relay and the analytics consumer die together, in the middle of the first wave.
        await wait_until(lambda: _at_least(counted, 150), 20, "analytics to get going")
        await children["relay"].kill()
        await children["analytics"].kill()
        counted_at_kill, unpublished_at_kill = await counted(), await unpublished(shard_pools)
        await insert_wave(shard_pools, second)
        await children["relay"].start()
        await children["analytics"].start()

        # 2. The notifications consumer dies in the middle of the second wave.
        posts = len(receiver.received)
        await wait_until(lambda: _true(len(receiver.received) >= posts + 100), 20, "webhooks to flow again")
        await children["notifications"].kill()
        posts_at_kill = len(receiver.received)
        await children["notifications"].start()

        # 3. Everything drains.
        async def drained() -> bool:
            left = await unpublished(shard_pools)
            notifications = await channel.declare_queue(topology.NOTIFICATIONS, passive=True)
            return (
                left == 0 and await counted() == len(money) and await delivered() == len(hooked_events)
                and notifications.declaration_result.message_count == 0  # the silent merchant's too
            )  # fmt: skip

        await wait_until(drained, 60, "every event published, counted and delivered")
    finally:
        statuses = {name: await child.terminate() for name, child in children.items()}

    assert counted_at_kill < len([e for e in first if e.amount is not None]), "analytics was not killed mid-stream"
    assert unpublished_at_kill > 0, "the relay was not killed mid-stream"
    assert posts_at_kill < len(receiver.received), "notifications was not killed mid-stream"
    assert statuses == {"relay": 0, "analytics": 0, "notifications": 0}  # SIGTERM is a clean exit
    await _assert_analytics_exact(control, money)
    await _assert_deliveries(control, everything, receiver, {m.merchant.id: m.webhook_secret for m in hooked})
    for name in topology.queue_names(topology.delays(settings)):
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result.message_count == 0, name
    _assert_json_logs(tmp_path)


async def _at_least(read: Callable[[], Awaitable[int]], count: int) -> bool:
    return await read() >= count


async def _true(value: bool) -> bool:
    return value


async def _assert_analytics_exact(control: asyncpg.Pool, money: list[Outgoing]) -> None:
    expected: Counter[tuple[str, str]] = Counter()
    volumes: Counter[tuple[str, str]] = Counter()
    for event in money:
        assert event.currency is not None and event.amount is not None
        expected[(event.merchant, event.currency)] += 1
        volumes[(event.merchant, event.currency)] += event.amount
    rows = await control.fetch(
        "SELECT merchant_id, currency, sum(count) AS n, sum(volume) AS v FROM analytics_minute GROUP BY 1, 2"
    )
    assert {(r["merchant_id"], r["currency"]): r["n"] for r in rows} == dict(expected)
    assert {(r["merchant_id"], r["currency"]): r["v"] for r in rows} == dict(volumes)
    processed = {r["event_id"] for r in await control.fetch("SELECT event_id FROM analytics_processed")}
    assert processed == {e.event_id for e in money}


async def _assert_deliveries(
    control: asyncpg.Pool, events: list[Outgoing], receiver: WebhookReceiver, secrets: dict[str, str]
) -> None:
    rows = await control.fetch("SELECT event_id, status FROM webhook_deliveries")
    by_status: dict[str, set[str]] = {}
    for row in rows:
        by_status.setdefault(row["status"], set()).add(row["event_id"])
    hooked = {e.event_id for e in events if e.merchant in secrets}
    assert by_status == {"delivered": hooked}  # a merchant with no webhook URL leaves no row
    assert set(receiver.event_ids(status=200)) == hooked  # every one at least once
    for request in receiver.received:
        merchant = orjson.loads(request.body)["merchant"]
        assert verify(secrets[merchant], request.headers["shardpay-signature"], request.body, now=request.at)


def _assert_json_logs(log_dir: Path) -> None:
    for log in log_dir.glob("*.log"):
        for line in log.read_text().splitlines():
            assert isinstance(orjson.loads(line), dict), f"{log.name}: {line}"
    assert time.time() > 0
