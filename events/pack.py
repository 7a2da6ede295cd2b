"""Many events in one broker message.

The relay sends each batch it claims from a shard as one message, a pack: one publish, one confirm, one
delivery and one ack per queue for up to a batch of events. Moving events one message each cost about 40 % of
all CPU per transfer (broker, relay and consumers together, measured with ``make bench``).

A pack is newline-delimited JSON: each line is one event exactly as the outbox holds it. JSON escapes line
breaks inside strings, so a line is always a whole event, and every event keeps its exact bytes (webhook
signatures are computed over them). A single-event message (a webhook retry coming back from a delay queue,
or one published by hand) is read as a pack of one.
"""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from events import broker

PACK_TYPE = "shardpay.event_pack"
ROUTING_KEY = "pack"  # the consumers' queues are bound to "#": they take packs and single events alike


def pack_message(rows: Sequence[asyncpg.Record]) -> aio_pika.Message:
    """One persistent message holding ``rows`` (outbox rows, oldest first)."""
    body = b"\n".join(row["body"].encode() for row in rows)
    pack_id = f"{rows[0]['event_id']}+{len(rows) - 1}"
    message = broker.event_message(body, pack_id, PACK_TYPE, {"events": len(rows)})
    message.content_type = "application/x-ndjson"
    return message


def unpack(message: AbstractIncomingMessage) -> list[bytes]:
    """The events' bodies in ``message``, in order."""
    if message.type != PACK_TYPE:
        return [message.body]
    return [line for line in message.body.split(b"\n") if line]
