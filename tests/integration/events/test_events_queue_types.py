"""Quorum queues on a broker that has them, and how an existing classic topology moves over (events.queue_types):
``shardpay migrate`` replaces idle classic queues by quorum ones; a classic queue holding a message keeps the
whole topology classic (and working) until it is idle; running processes never replace a queue."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from events import queue_types, topology
from shardpay.config import Settings


async def _classic_topology(channel: AbstractChannel, settings: Settings) -> None:
    await topology.declare(channel, topology.delays(settings))  # no types: every queue classic, as before


async def _types(amqp: AbstractConnection, settings: Settings) -> dict[str, str]:
    """Each queue's type as the broker has it: declaring it quorum is refused for a classic queue."""
    return await queue_types.resolve(amqp, topology.delays(settings), "quorum")


async def test_a_new_broker_gets_quorum_queues(clean: None, amqp: AbstractConnection, settings: Settings) -> None:
    assert queue_types.supports_quorum(amqp)  # the test broker is RabbitMQ 3.10 or later
    result = await queue_types.migrate(settings)
    assert result["ok"] and result["classic"] == [], result
    assert set((await _types(amqp, settings)).values()) == {"quorum"}


async def test_idle_classic_queues_are_moved_over_by_migrate(
    clean: None, amqp: AbstractConnection, channel: AbstractChannel, settings: Settings
) -> None:
    await _classic_topology(channel, settings)
    assert set((await _types(amqp, settings)).values()) == {"classic"}
    result = await queue_types.migrate(settings)
    assert result["classic"] == [] and len(result["quorum"]) == len(topology.queue_names(topology.delays(settings)))
    assert set((await _types(amqp, settings)).values()) == {"quorum"}


async def test_a_classic_queue_holding_a_message_keeps_its_type_and_the_message(
    clean: None, amqp: AbstractConnection, channel: AbstractChannel, settings: Settings
) -> None:
    await _classic_topology(channel, settings)
    await channel.default_exchange.publish(aio_pika.Message(b"waiting"), routing_key=topology.ANALYTICS)
    result = await queue_types.migrate(settings)
    assert topology.ANALYTICS in result["classic"] and result["quorum"] == [], result
    queue = await channel.declare_queue(topology.ANALYTICS, passive=True)
    assert queue.declaration_result.message_count == 1


async def test_running_processes_use_classic_queues_as_they_are(
    clean: None, amqp: AbstractConnection, channel: AbstractChannel, settings: Settings
) -> None:
    await _classic_topology(channel, settings)
    kinds = await queue_types.resolve(amqp, topology.delays(settings), "auto")  # what a consumer or the relay does
    assert set(kinds.values()) == {"classic"}
    fresh = await amqp.channel()
    await topology.declare(fresh, topology.delays(settings), kinds)  # and it declares them without a refusal
    await fresh.close()
