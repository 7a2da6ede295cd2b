"""The outbox relay on real shards and a real broker: confirms before marks, SKIP LOCKED, outages."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, DeliveryMode
from events_support import (
    Outgoing,
    Runner,
    TcpProxy,
    free_port,
    insert_events,
    running,
    transfer_event,
    unpublished,
    wait_until,
)

from events import outbox, topology
from events.pack import PACK_TYPE, ROUTING_KEY, unpack
from events.publisher import Publisher, PublishFailed
from events.relay import RelayOptions, relay_batch, run_relay
from shardpay.config import Settings

pytestmark = pytest.mark.usefixtures("clean")


def spread(count: int, merchant: str = "mer_test") -> list[list[Outgoing]]:
    """``count`` transfer events, alternately on shard 0 and shard 1."""
    events = [transfer_event(merchant, 100 + i) for i in range(count)]
    return [events[0::2], events[1::2]]


async def insert_spread(pools: list[asyncpg.Pool], count: int) -> list[Outgoing]:
    per_shard = spread(count)
    for pool, events in zip(pools, per_shard, strict=True):
        await insert_events(pool, events)
    return [e for events in per_shard for e in events]


async def drain(channel: AbstractChannel, queue_name: str) -> list[AbstractIncomingMessage]:
    """Every message now in the queue, taken off it."""
    queue = await channel.get_queue(queue_name)
    messages = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    return messages


async def drained_ids(channel: AbstractChannel, queue_name: str) -> list[str]:
    """The ids of every event in the queue's messages (packs and single events), in order."""
    return [orjson.loads(body)["id"] for message in await drain(channel, queue_name) for body in unpack(message)]


def relay(settings: Settings, batch_size: int = 200) -> Runner:
    return lambda stop: run_relay(settings, stop, RelayOptions(batch_size=batch_size))


async def test_relay_publishes_every_row_with_its_properties(
    settings: Settings, shard_pools: list[asyncpg.Pool], channel: AbstractChannel
) -> None:
    events = await insert_spread(shard_pools, 50)
    async with running(relay(settings)) as group:
        await wait_until(lambda: _none_left(shard_pools), 10, "every row published", group)
    messages = await drain(channel, topology.ANALYTICS)
    assert len(messages) == 2  # one pack per shard's batch
    bodies = {}
    for message in messages:
        assert message.type == PACK_TYPE
        assert message.routing_key == ROUTING_KEY
        assert message.delivery_mode == DeliveryMode.PERSISTENT
        assert message.content_type == "application/x-ndjson"
        lines = unpack(message)
        assert (message.headers or {})["events"] == len(lines)
        bodies.update({orjson.loads(line)["id"]: line for line in lines})
    assert set(bodies) == {e.event_id for e in events}
    for event in events:
        assert bodies[event.event_id] == event.body.encode()  # byte for byte: webhook signatures depend on it
    assert len(await drained_ids(channel, topology.NOTIFICATIONS)) == 50


async def _none_left(pools: list[asyncpg.Pool]) -> bool:
    return await unpublished(pools) == 0


class WatchingPublisher(Publisher):
    """Looks at the outbox from another connection the moment the broker has confirmed a batch."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        super().__init__(settings.amqp_url, settings.webhook_backoff)
        self.pool = pool
        self.unpublished_at_confirm: list[int] = []

    async def publish(self, messages: Sequence[tuple[str, aio_pika.Message]]) -> None:
        await super().publish(messages)
        self.unpublished_at_confirm.append(await unpublished([self.pool]))


class LosingPublisher(Publisher):
    """The broker takes the batch but the confirms never arrive (the connection died just then)."""

    async def publish(self, messages: Sequence[tuple[str, aio_pika.Message]]) -> None:
        await super().publish(messages)
        raise PublishFailed(ConnectionResetError())


async def test_rows_are_marked_only_after_every_confirm(settings: Settings, shard_pools: list[asyncpg.Pool]) -> None:
    pool = shard_pools[0]
    await insert_events(pool, [transfer_event("mer_test", 100 + i) for i in range(10)])
    watching = WatchingPublisher(settings, pool)
    try:
        assert await relay_batch(pool, watching, 100) == 10
    finally:
        await watching.close()
    assert watching.unpublished_at_confirm == [10]  # confirmed, and still not marked at that moment
    assert await unpublished([pool]) == 0


async def test_a_batch_without_confirms_stays_unpublished(settings: Settings, shard_pools: list[asyncpg.Pool]) -> None:
    pool = shard_pools[0]
    await insert_events(pool, [transfer_event("mer_test", 100 + i) for i in range(5)])
    losing = LosingPublisher(settings.amqp_url, settings.webhook_backoff)
    try:
        with pytest.raises(PublishFailed):
            await relay_batch(pool, losing, 100)
    finally:
        await losing.close()
    assert await unpublished([pool]) == 5


async def test_unroutable_message_is_an_error_and_the_row_goes_again(
    settings: Settings, shard_pools: list[asyncpg.Pool], channel: AbstractChannel
) -> None:
    pool = shard_pools[1]
    publisher = Publisher(settings.amqp_url, settings.webhook_backoff)
    try:
        await insert_events(pool, [transfer_event("mer_test", 1)])
        assert await relay_batch(pool, publisher, 100) == 1  # declares the topology
        for name in topology.CONSUMED:
            await channel.queue_delete(name)  # nothing is bound to the exchange any more
        await insert_events(pool, [late := transfer_event("mer_test", 2)])
        with pytest.raises(PublishFailed) as failure:
            await relay_batch(pool, publisher, 100)
        assert failure.value.reason == "PublishError"  # returned by the broker (mandatory), not lost
        assert await unpublished([pool]) == 1
        assert await relay_batch(pool, publisher, 100) == 1  # reconnected, topology declared again
    finally:
        await publisher.close()
    assert await drained_ids(channel, topology.ANALYTICS) == [late.event_id]


async def test_two_relays_publish_each_event_exactly_once(
    settings: Settings, shard_pools: list[asyncpg.Pool], channel: AbstractChannel
) -> None:
    events = await insert_spread(shard_pools, 1000)
    async with running(relay(settings, batch_size=20), relay(settings, batch_size=20)) as group:
        await wait_until(lambda: _none_left(shard_pools), 30, "every row published", group)
    ids = await drained_ids(channel, topology.ANALYTICS)
    assert len(ids) == 1000
    assert set(ids) == {e.event_id for e in events}


async def test_relay_waits_out_an_unreachable_broker_then_publishes(
    settings: Settings, shard_pools: list[asyncpg.Pool], channel: AbstractChannel
) -> None:
    await insert_spread(shard_pools, 20)
    nowhere = dataclasses.replace(settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    async with running(relay(nowhere)) as group:
        await asyncio.sleep(1.0)
        group.check()
        assert await unpublished(shard_pools) == 20
    async with running(relay(settings)) as group:
        await wait_until(lambda: _none_left(shard_pools), 10, "every row published", group)
    assert len(await drained_ids(channel, topology.ANALYTICS)) == 20


async def test_a_shard_that_is_down_does_not_stop_the_others(
    settings: Settings, shard_pools: list[asyncpg.Pool], channel: AbstractChannel
) -> None:
    events = await insert_spread(shard_pools, 20)
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    half = dataclasses.replace(settings, shard_dsns=(down, settings.shard_dsns[1]))
    async with running(relay(half)) as group:
        await wait_until(lambda: _none_left(shard_pools[1:]), 10, "shard 1 published", group)
    assert await unpublished(shard_pools[:1]) == 10
    assert set(await drained_ids(channel, topology.ANALYTICS)) == {e.event_id for e in events[10:]}


async def test_relay_survives_a_broker_restart(
    settings: Settings, shard_pools: list[asyncpg.Pool], channel: AbstractChannel
) -> None:
    proxy = TcpProxy(5672)
    await proxy.start()
    via_proxy = dataclasses.replace(settings, amqp_url=settings.amqp_url.replace(":5672", f":{proxy.port}"))
    async with running(relay(via_proxy)) as group:
        first = await insert_spread(shard_pools, 40)
        await wait_until(lambda: _none_left(shard_pools), 10, "first wave published", group)
        await proxy.cut()
        second = await insert_spread(shard_pools, 40)
        await asyncio.sleep(0.5)
        assert await unpublished(shard_pools) == 40  # nothing is marked while the broker is away
        await proxy.start()
        await wait_until(lambda: _none_left(shard_pools), 15, "second wave published after the restart", group)
    await proxy.cut()
    ids = set(await drained_ids(channel, topology.ANALYTICS))
    assert ids == {e.event_id for e in first + second}


async def test_prune_and_lag(shard_pools: list[asyncpg.Pool]) -> None:
    pool = shard_pools[0]
    old, recent, waiting = (transfer_event("mer_test", n) for n in (1, 2, 3))
    await insert_events(pool, [old, recent, waiting])
    await pool.execute("UPDATE outbox SET published_at = now() - interval '2 hours' WHERE event_id = $1", old.event_id)
    await pool.execute("UPDATE outbox SET published_at = now() WHERE event_id = $1", recent.event_id)
    await pool.execute(
        "UPDATE outbox SET created_at = now() - interval '30 seconds' WHERE event_id = $1", waiting.event_id
    )
    count, age = await outbox.outbox_lag(pool)
    assert count == 1 and 30 <= age < 60
    assert await outbox.prune(pool, 3600) == 1
    left = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM outbox")}
    assert left == {recent.event_id, waiting.event_id}
    assert await outbox.outbox_lag(shard_pools[1]) == (0, 0.0)


async def test_relay_declares_the_topology_at_start_even_with_nothing_to_send(
    settings: Settings, channel: AbstractChannel
) -> None:
    async with running(relay(settings)):
        await asyncio.sleep(0.3)
    for name in topology.queue_names(topology.delays(settings)):
        await channel.declare_queue(name, passive=True)  # raises if missing
