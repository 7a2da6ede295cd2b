"""Queuing a webhook in the same transaction as the change it reports, with the webhook faults applied.

``webhook_drop_rate`` stores the event as ``dropped`` (never sent, but visible in ``/sim/events`` so a test can
tell a drop from a loss); ``webhook_duplicate_rate`` sends it twice; ``webhook_delay_ms`` makes it due later.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import orjson

from pspsim.db import Conn
from pspsim.faults import Faults, rolls
from pspsim.render import new_id

TYPES = frozenset({
    "hosted_session.completed", "charge.succeeded", "charge.failed", "charge.dispute.created",
    "refund.succeeded", "refund.failed", "payout.paid", "payout.failed",
})  # fmt: skip

_INSERT = """
INSERT INTO events (id, type, body, copies, state, due_at) VALUES ($1, $2, $3, $4, $5, now() + $6::interval)
"""


def body(event_id: str, event_type: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": event_id, "type": event_type, "created": int(time.time()), "data": {"object": obj}})


async def enqueue(conn: Conn, event_type: str, obj: dict[str, Any], faults: Faults) -> str:
    """Queue ``event_type`` about ``obj``; returns the event id."""
    assert event_type in TYPES, event_type
    event_id = new_id("pspevt")
    state = "dropped" if rolls(faults.webhook_drop_rate) else "pending"
    copies = 2 if rolls(faults.webhook_duplicate_rate) else 1
    delay = timedelta(milliseconds=faults.webhook_delay_ms)
    await conn.execute(_INSERT, event_id, event_type, body(event_id, event_type, obj), copies, state, delay)
    return event_id


def final_type(obj: dict[str, Any]) -> str:
    """The webhook that a charge, refund or payout reaching its final status sends."""
    return f"{obj['object']}.{obj['status']}"
