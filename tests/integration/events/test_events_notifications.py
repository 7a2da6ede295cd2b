"""Merchant webhooks end to end: relay -> RabbitMQ -> notifications consumer -> a real HTTP receiver."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from events_support import (
    Counting,
    Runner,
    WebhookReceiver,
    free_port,
    insert_events,
    running,
    transfer_event,
    wait_until,
)

from events import topology
from events.consumer import run_consumer
from events.notifications import NOTIFICATIONS, open_notifier, run_notifications
from events.relay import run_relay
from events.signing import verify
from shardpay.config import Settings
from shards.control import NewMerchant

pytestmark = pytest.mark.usefixtures("clean")
MakeMerchant = Callable[[str, str | None], Awaitable[NewMerchant]]
DEAD = topology.dead_queue(topology.NOTIFICATIONS)


def relay(settings: Settings) -> Runner:
    return lambda stop: run_relay(settings, stop)


def notifications(settings: Settings) -> Runner:
    return lambda stop: run_notifications(settings, stop)


async def deliveries(control: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    rows = await control.fetch("SELECT * FROM webhook_deliveries")
    return {row["event_id"]: dict(row) for row in rows}


def rows_with(control: asyncpg.Pool, count: int, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await control.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = $1", status)
        return bool(found == count)

    return check


async def depth(channel: AbstractChannel, name: str) -> int:
    queue = await channel.declare_queue(name, passive=True)
    assert queue.declaration_result.message_count is not None
    return queue.declaration_result.message_count


async def test_webhook_is_delivered_signed(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant,
) -> None:  # fmt: skip
    merchant = await make_merchant("acme", receiver.url)
    events = [transfer_event(merchant.merchant.id, 100 + i) for i in range(3)]
    await insert_events(shard_pools[0], events)
    async with running(relay(settings), notifications(settings)) as group:
        await wait_until(rows_with(control, 3, "delivered"), 10, "three deliveries", group)
    assert sorted(r.body for r in receiver.received) == sorted(e.body.encode() for e in events)
    for request in receiver.received:
        header = request.headers["shardpay-signature"]
        assert verify(merchant.webhook_secret, header, request.body, now=time.time())
        assert not verify("whsec_someone_else", header, request.body, now=time.time())
        assert request.headers["content-type"] == "application/json"
    for row in (await deliveries(control)).values():
        assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 1, 200)
        assert row["delivered_at"] is not None and row["merchant_id"] == merchant.merchant.id


async def test_failed_webhook_is_retried_through_the_delay_queues(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant,
) -> None:  # fmt: skip
    merchant = await make_merchant("flaky", receiver.url)
    receiver.fail_first = 2
    event = transfer_event(merchant.merchant.id, 500)
    await insert_events(shard_pools[1], [event])
    async with running(relay(settings), notifications(settings)) as group:
        await wait_until(rows_with(control, 1, "delivered"), 10, "delivery after two failures", group)
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert receiver.event_ids() == [event.event_id] * 3
    first, second, third = (r.at for r in receiver.received)
    assert second - first >= 0.2 * 0.8 - 0.05  # backoff step 1 (0.2 s, jittered down at most 20 %)
    assert third - second >= 0.4 * 0.8 - 0.05  # backoff step 2
    row = (await deliveries(control))[event.event_id]
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 3, 200)


async def test_webhook_is_dead_lettered_after_the_last_attempt(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant, channel: AbstractChannel,
) -> None:  # fmt: skip
    failing = await make_merchant("down", receiver.url)
    unreachable = await make_merchant("gone", f"http://127.0.0.1:{free_port()}/hooks")
    receiver.always_fail = True
    to_failing, to_unreachable = transfer_event(failing.merchant.id, 1), transfer_event(unreachable.merchant.id, 2)
    await insert_events(shard_pools[0], [to_failing, to_unreachable])
    async with running(relay(settings), notifications(settings)) as group:
        await wait_until(rows_with(control, 2, "dead"), 15, "both events dead-lettered", group)
    assert receiver.event_ids() == [to_failing.event_id] * 4  # 1 + len(backoff) attempts
    rows = await deliveries(control)
    assert (rows[to_failing.event_id]["attempts"], rows[to_failing.event_id]["last_status"]) == (4, 500)
    assert (rows[to_unreachable.event_id]["attempts"], rows[to_unreachable.event_id]["last_error"]) == (
        4,
        "ConnectError",
    )
    dead = await (await channel.get_queue(DEAD)).get(no_ack=True)
    also = await (await channel.get_queue(DEAD)).get(no_ack=True)
    assert {dead.message_id, also.message_id} == {to_failing.event_id, to_unreachable.event_id}
    assert (dead.headers or {})["x-attempt"] == 4
    assert await depth(channel, DEAD) == 0
    for seconds in topology.delays(settings):
        assert await depth(channel, topology.delay_queue(seconds)) == 0


async def test_a_redelivered_delivered_event_is_not_posted_again(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant,
) -> None:  # fmt: skip
    merchant = await make_merchant("acme", receiver.url)
    event = transfer_event(merchant.merchant.id, 700)
    await insert_events(shard_pools[0], [event])
    async with open_notifier(settings, control) as handler:
        notifier = Counting(handler)
        consume = lambda stop: run_consumer(settings, NOTIFICATIONS, notifier, stop)  # noqa: E731
        async with running(relay(settings), consume) as group:
            await wait_until(lambda: notifier.seen(1), 10, "the first delivery", group)
            # As if the relay had died between the broker's confirm and its commit: the row goes again.
            await shard_pools[0].execute("UPDATE outbox SET published_at = NULL")
            await wait_until(lambda: notifier.seen(2), 10, "the duplicate", group)
    assert receiver.event_ids() == [event.event_id]
    assert (await deliveries(control))[event.event_id]["attempts"] == 1


async def test_merchant_without_webhook_url_is_acked_without_a_delivery_row(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool, channel: AbstractChannel,
    receiver: WebhookReceiver, make_merchant: MakeMerchant,
) -> None:  # fmt: skip
    silent = await make_merchant("silent", None)
    events = [transfer_event(silent.merchant.id, 1), transfer_event("mer_0000unknown0000000000", 2)]
    await insert_events(shard_pools[1], events)
    async with open_notifier(settings, control) as handler:
        notifier = Counting(handler)
        consume = lambda stop: run_consumer(settings, NOTIFICATIONS, notifier, stop)  # noqa: E731
        async with running(relay(settings), consume) as group:
            await wait_until(lambda: notifier.seen(2), 10, "both events handled", group)
    assert receiver.received == []
    assert await deliveries(control) == {}
    assert await depth(channel, topology.NOTIFICATIONS) == 0


async def test_a_malformed_message_goes_to_the_dead_letter_queue(settings: Settings, channel: AbstractChannel) -> None:
    exchange = await topology.declare(channel, settings.webhook_backoff)
    await exchange.publish(aio_pika.Message(b"not json", message_id="evt_bad"), routing_key="transfer.succeeded")
    async with running(notifications(settings)) as group:
        await wait_until(lambda: _has(channel, DEAD, 1), 10, "the malformed message dead-lettered", group)


async def _has(channel: AbstractChannel, name: str, count: int) -> bool:
    return await depth(channel, name) == count
