"""The event envelope as consumers read it, checked once at the edge of each consumer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


class InvalidEvent(ValueError):
    """A message that can never be processed, however often it is retried: it is dead-lettered."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    merchant: str
    created: int
    obj: dict[str, Any]
    request_id: str | None = None  # the request that made it: its trace (shardpay.tracing)


def parse(body: bytes) -> Event:
    """The event in ``body`` (the outbox's JSON, byte for byte), or InvalidEvent."""
    raw = _load(body)
    data = raw.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise InvalidEvent("event has no 'data.object'")
    created = raw.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        raise InvalidEvent("event has no integer 'created'")
    request_id = raw.get("request_id")
    return Event(_text(raw, "id"), _text(raw, "type"), _text(raw, "merchant"), created, obj,
                 request_id if isinstance(request_id, str) else None)  # fmt: skip


def _load(body: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidEvent("body is not JSON") from None
    if not isinstance(raw, dict):
        raise InvalidEvent("body is not a JSON object")
    return raw


def _text(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"event field '{name}' is missing or not a non-empty string")
    return value
