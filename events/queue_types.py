"""Quorum queues where the broker has them (``SHARDPAY_AMQP_QUEUE_TYPE``: ``auto``, ``quorum``, ``classic``).

A quorum queue is replicated by Raft over the broker's nodes (a majority of one on a single node, three nodes
in production) and survives a node's loss; a classic queue lives on one node. Quorum queues exist from
RabbitMQ 3.8 and take the message TTL the delay queues rely on from 3.10, so ``auto`` means quorum on 3.10 and
later, classic before.

A queue's type cannot change in place: declaring an existing classic queue as a quorum one is refused
(PRECONDITION_FAILED). So each queue is resolved on its own whenever a process connects: one that is new or
already quorum is quorum, an existing classic one is used as classic. Classic queues are moved over by
``shardpay migrate`` (which ``make run`` and ``make run-ha`` run before starting anything), and only when every
queue of shardpay's is idle (no message, no consumer: nothing in a delay queue can be dead-lettered into a
queue while it is being replaced, and no process is using any): each is deleted (``if-empty``, ``if-unused``,
so the broker itself re-checks) and declared again as a quorum queue. Otherwise they stay classic, and
``migrate`` says which and why; a later one that finds everything idle moves them. A publish that lands in
the moment between the delete and the new declaration is returned (``mandatory``) and published again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import aiormq.exceptions
from aio_pika.abc import AbstractConnection
from pamqp.common import FieldTable

from events import broker, topology
from events.logs import emit
from shardpay.config import Settings

QUORUM_SINCE = (3, 10)


def supports_quorum(connection: AbstractConnection) -> bool:
    """Whether the broker is RabbitMQ 3.10 or later (its ``version`` server property)."""
    properties = connection.transport.connection.server_properties if connection.transport else {}
    raw = properties.get("version", b"")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        version = tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return False
    return version >= QUORUM_SINCE


async def resolve(
    connection: AbstractConnection, delays: Iterable[float], setting: str, move: bool = False
) -> dict[str, str]:
    """Each queue's type to declare it with (quorum or classic); with ``move``, idle classic queues are moved
    over first (``shardpay migrate`` only: nothing else of shardpay's runs then)."""
    queues = topology.queue_arguments(delays)
    if setting == "classic" or (setting == "auto" and not supports_quorum(connection)):
        return dict.fromkeys(queues, "classic")
    kinds = {name: "quorum" if await _declares(connection, name, args) else "classic" for name, args in queues.items()}
    classic = [name for name, kind in kinds.items() if kind == "classic"]
    if not classic or not move:
        return kinds
    busy = await _busy(connection, list(queues))
    if busy:
        emit("topology.classic_kept", queues=classic, reason=f"not idle: {', '.join(busy)}")
        return kinds
    for name in classic:
        if await _replace(connection, name, queues[name]):
            kinds[name] = "quorum"
    return kinds


async def _declares(connection: AbstractConnection, name: str, arguments: FieldTable) -> bool:
    """Declare ``name`` as a quorum queue on a channel of its own (a refusal closes the channel)."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=topology.typed(arguments, "quorum"))
        return True
    except aiormq.exceptions.ChannelPreconditionFailed:
        return False
    finally:
        with contextlib.suppress(*broker.TRANSIENT):
            await channel.close()


async def _busy(connection: AbstractConnection, names: list[str]) -> list[str]:
    """The queues that hold messages or have consumers."""
    busy: list[str] = []
    channel = await connection.channel()
    try:
        for name in names:
            declared = await channel.declare_queue(name, passive=True)
            result = declared.declaration_result
            if result.message_count or result.consumer_count:
                busy.append(f"{name} ({result.message_count} messages, {result.consumer_count} consumers)")
    finally:
        with contextlib.suppress(*broker.TRANSIENT):
            await channel.close()
    return busy


async def _replace(connection: AbstractConnection, name: str, arguments: FieldTable) -> bool:
    channel = await connection.channel()
    try:
        await channel.queue_delete(name, if_unused=True, if_empty=True)
        await channel.declare_queue(name, durable=True, arguments=topology.typed(arguments, "quorum"))
    except aiormq.exceptions.ChannelPreconditionFailed:
        emit("topology.classic_kept", queues=[name], reason="in use or not empty when deleted")
        return False
    finally:
        with contextlib.suppress(*broker.TRANSIENT):
            await channel.close()
    emit("topology.quorum_queue", queue=name, was="classic")
    return True


async def migrate(settings: Settings) -> dict[str, Any]:
    """``shardpay migrate``'s part for the broker: every queue declared, idle classic ones moved to quorum."""
    try:
        connection = await broker.connect(settings.amqp_url)
    except broker.TRANSIENT as exc:
        return {"ok": False, "error": f"RabbitMQ unreachable ({type(exc).__name__}); queues are declared at start"}
    try:
        delays = topology.delays(settings)
        kinds = await resolve(connection, delays, settings.amqp_queue_type, move=True)
        channel = await connection.channel()
        await topology.declare(channel, delays, kinds)
    finally:
        await broker.close_quietly(connection)
    return {"ok": True, "quorum": sorted(n for n, k in kinds.items() if k == "quorum"),
            "classic": sorted(n for n, k in kinds.items() if k == "classic")}  # fmt: skip
