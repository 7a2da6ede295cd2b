"""Analytics: money volume per merchant, currency and minute, each event counted exactly once."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from events_support import Counting, Runner, TcpProxy, insert_events, running, transfer_event, wait_until, wallet_event

from events import topology
from events.analytics import ANALYTICS, Counter, apply, query, run_analytics
from events.consumer import run_consumer
from events.envelope import parse
from events.relay import run_relay
from events.volume import movement_of
from shardpay.commands.base import CliError
from shardpay.commands.events import _query
from shardpay.config import Settings

pytestmark = pytest.mark.usefixtures("clean")
T0 = int(datetime(2030, 1, 2, 3, 4, tzinfo=UTC).timestamp())  # a minute boundary


def relay(settings: Settings) -> Runner:
    return lambda stop: run_relay(settings, stop)


async def totals(control: asyncpg.Pool) -> tuple[int, int]:
    row = await control.fetchrow(
        "SELECT coalesce(sum(count), 0) AS n, coalesce(sum(volume), 0) AS v FROM analytics_minute"
    )
    assert row is not None
    return int(row["n"]), int(row["v"])


async def test_apply_counts_an_event_once(control: asyncpg.Pool) -> None:
    event = transfer_event("mer_a", 250, "EUR", created=T0 + 59)
    movement = movement_of(parse(event.body.encode()))
    assert movement is not None and movement.minute == datetime.fromtimestamp(T0, UTC)
    assert await apply(control, event.event_id, movement)
    assert not await apply(control, event.event_id, movement)
    assert await totals(control) == (1, 250)


async def test_the_same_event_delivered_twice_counts_once(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool
) -> None:
    event = transfer_event("mer_a", 1234)
    await insert_events(shard_pools[0], [event, wallet_event("mer_a")])
    counter = Counting(Counter(control))
    consume = lambda stop: run_consumer(settings, ANALYTICS, counter, stop)  # noqa: E731
    async with running(relay(settings), consume) as group:
        await wait_until(lambda: counter.seen(2), 10, "both events", group)
        await shard_pools[0].execute("UPDATE outbox SET published_at = NULL")  # the relay sends both again
        await wait_until(lambda: counter.seen(4), 10, "both duplicates", group)
    assert await totals(control) == (1, 1234)
    assert await control.fetchval("SELECT count(*) FROM analytics_processed") == 1  # wallet.created moves no money


async def test_query_filters_by_currency_and_window(settings: Settings, control: asyncpg.Pool) -> None:
    for created, amount, currency in [(T0, 100, "USD"), (T0 + 30, 50, "USD"), (T0 + 60, 7, "USD"), (T0 + 5, 9, "EUR")]:
        event = transfer_event("mer_a", amount, currency, created=created)
        movement = movement_of(parse(event.body.encode()))
        assert movement is not None
        await apply(control, event.event_id, movement)
    assert movement is not None
    await apply(control, "evt_other", dataclasses.replace(movement, merchant="mer_b"))
    start = datetime.fromtimestamp(T0, UTC)
    everything = await query(control, "mer_a", None, start, start + timedelta(hours=1))
    assert everything == [
        {"minute": T0, "currency": "EUR", "volume": 9, "count": 1},
        {"minute": T0, "currency": "USD", "volume": 150, "count": 2},
        {"minute": T0 + 60, "currency": "USD", "volume": 7, "count": 1},
    ]
    usd_first_minute = await query(control, "mer_a", "USD", start, start + timedelta(minutes=1))
    assert usd_first_minute == [{"minute": T0, "currency": "USD", "volume": 150, "count": 2}]
    args = argparse.Namespace(merchant="mer_a", currency="USD", since="2030-01-02T03:05:00", until="2030-01-03")
    printed = await _query(args, settings)  # the CLI's handler; naive times are UTC
    assert printed["data"] == [{"minute": T0 + 60, "currency": "USD", "volume": 7, "count": 1}]


@pytest.mark.parametrize(
    ("currency", "since", "until"),
    [("usd", None, None), (None, "yesterday", None), (None, "2030-01-02T00:00:00", "2030-01-01T00:00:00")],
)
async def test_analytics_cli_refuses_bad_arguments(
    settings: Settings, currency: str | None, since: str | None, until: str | None
) -> None:
    with pytest.raises(CliError):
        await _query(argparse.Namespace(merchant="mer_a", currency=currency, since=since, until=until), settings)


async def test_a_money_event_without_an_amount_is_dead_lettered(
    settings: Settings, control: asyncpg.Pool, channel: AbstractChannel
) -> None:
    exchange = await topology.declare(channel, settings.webhook_backoff)
    body = transfer_event("mer_a", 1).body.replace('"amount":1,', "")
    await exchange.publish(aio_pika.Message(body.encode(), message_id="evt_x"), routing_key="transfer.succeeded")
    dead = topology.dead_queue(topology.ANALYTICS)
    async with running(lambda stop: run_analytics(settings, stop)) as group:
        await wait_until(lambda: _depth_is(channel, dead, 1), 10, "the bad event dead-lettered", group)
    assert await totals(control) == (0, 0)


async def test_a_bad_event_in_a_pack_is_dead_lettered_alone(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool, channel: AbstractChannel
) -> None:
    await topology.declare(channel, settings.webhook_backoff)
    bad = transfer_event("mer_a", 1)
    bad = dataclasses.replace(bad, body=bad.body.replace('"amount":1,', ""))
    await insert_events(shard_pools[0], [transfer_event("mer_a", 100), bad, transfer_event("mer_a", 20)])
    dead = topology.dead_queue(topology.ANALYTICS)
    analytics = lambda stop: run_analytics(settings, stop)  # noqa: E731
    async with running(relay(settings), analytics) as group:  # the relay sends the three as one pack
        await wait_until(lambda: _depth_is(channel, dead, 1), 10, "the bad event dead-lettered", group)
        await wait_until(lambda: _totals_are(control, (2, 120)), 10, "the two good events counted", group)
    buried = await (await channel.get_queue(dead)).get(no_ack=True)
    assert buried.body == bad.body.encode()


async def _totals_are(control: asyncpg.Pool, expected: tuple[int, int]) -> bool:
    return await totals(control) == expected


async def _depth_is(channel: AbstractChannel, name: str, count: int) -> bool:
    queue = await channel.declare_queue(name, passive=True)
    return queue.declaration_result.message_count == count


async def test_consumer_survives_a_broker_restart(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool
) -> None:
    proxy = TcpProxy(5672)
    await proxy.start()
    via_proxy = dataclasses.replace(settings, amqp_url=settings.amqp_url.replace(":5672", f":{proxy.port}"))
    events = [transfer_event("mer_a", 10) for _ in range(100)]
    async with running(relay(settings), lambda stop: run_analytics(via_proxy, stop)) as group:
        await insert_events(shard_pools[0], events[:50])
        await wait_until(lambda: _counted(control, 50), 10, "the first half counted", group)
        await proxy.cut()
        await insert_events(shard_pools[1], events[50:])
        await asyncio.sleep(0.5)
        assert (await totals(control))[0] == 50  # the consumer cannot reach the broker meanwhile
        await proxy.start()
        await wait_until(lambda: _counted(control, 100), 15, "the second half counted after the restart", group)
    await proxy.cut()
    assert await totals(control) == (100, 1000)


async def _counted(control: asyncpg.Pool, count: int) -> bool:
    return (await totals(control))[0] >= count
