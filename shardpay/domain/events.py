"""Events: past-tense facts, rendered once and stored in the outbox in the same transaction as the change."""

from __future__ import annotations

import time
from typing import Any

import orjson

from shardpay import ids


def render_event(
    event_type: str, merchant_id: str, request_id: str, obj: dict[str, Any], slot: int, created: int | None = None
) -> tuple[str, str]:
    """(event id, JSON body) of an event about ``obj``; ``slot`` keeps the event id on the object's shard."""
    event_id = ids.new_id("evt", slot)
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(time.time()) if created is None else created,
        "merchant": merchant_id,
        "request_id": request_id,
        "data": {"object": obj},
    }
    return event_id, orjson.dumps(body).decode()
