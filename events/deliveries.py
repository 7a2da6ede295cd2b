"""The control database's record of webhook deliveries, one row per event: what makes delivery idempotent."""

from __future__ import annotations

from dataclasses import dataclass

from events.db import Source
from events.envelope import Event
from events.webhook import Result, Target

# Once delivered or skipped, an event is never sent again (a duplicate message is acked unsent);
# 'retrying' and 'dead' can still move, so a replay from the dead-letter queue is attempted afresh.
FINAL = ("delivered", "skipped")

_RECORD = """
INSERT INTO webhook_deliveries AS d
    (event_id, merchant_id, event_type, status, attempts, last_status, last_error, delivered_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $4 = 'delivered' THEN now() END)
ON CONFLICT (event_id) DO UPDATE SET
    status = EXCLUDED.status, attempts = GREATEST(d.attempts, EXCLUDED.attempts),
    last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error,
    delivered_at = EXCLUDED.delivered_at, updated_at = now()
WHERE d.status NOT IN ('delivered', 'skipped')
"""


@dataclass(frozen=True)
class Delivery:
    event: Event
    status: str  # retrying | delivered | skipped | dead
    attempts: int
    result: Result | None = None
    note: str | None = None  # why, when there was no HTTP attempt to explain it


async def is_final(control: Source, event_id: str) -> bool:
    status = await control.fetchval("SELECT status FROM webhook_deliveries WHERE event_id = $1", event_id)
    return status in FINAL


async def target_of(control: Source, merchant_id: str) -> Target | None:
    """Where and how to sign the merchant's webhooks, or None if it has no webhook URL (or no longer exists)."""
    row = await control.fetchrow("SELECT webhook_url, webhook_secret FROM merchants WHERE id = $1", merchant_id)
    if row is None or not row["webhook_url"]:
        return None
    return Target(row["webhook_url"], row["webhook_secret"])


async def record(control: Source, delivery: Delivery) -> None:
    """Upsert the event's row; a row already final is left as it is (a late duplicate cannot undo it)."""
    result = delivery.result or Result(ok=False)
    event = delivery.event
    await control.execute(
        _RECORD, event.id, event.merchant, event.type, delivery.status, delivery.attempts,
        result.status, result.error or delivery.note,
    )  # fmt: skip
