"""The control database's record of webhook deliveries, one row per event: what makes delivery idempotent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from events.db import Source
from events.envelope import Event
from events.webhook import Result, Target

# Once delivered, an event is never sent again (a duplicate message is acked unsent); 'retrying' and 'dead' can
# still move, so a replay from the dead-letter queue is attempted afresh. 'skipped' (a merchant with no webhook
# URL) is no longer written, and rows that have it stay final.
FINAL = ("delivered", "skipped")

_RECORD = """
INSERT INTO webhook_deliveries AS d
    (event_id, merchant_id, event_type, status, attempts, last_status, last_error, delivered_at)
SELECT e, m, t, s, a, ls, le, CASE WHEN s = 'delivered' THEN now() END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[])
    AS x (e, m, t, s, a, ls, le)
ORDER BY e
ON CONFLICT (event_id) DO UPDATE SET
    status = EXCLUDED.status, attempts = GREATEST(d.attempts, EXCLUDED.attempts),
    last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error,
    delivered_at = EXCLUDED.delivered_at, updated_at = now()
WHERE d.status NOT IN ('delivered', 'skipped')
"""


@dataclass(frozen=True)
class Delivery:
    event: Event
    status: str  # retrying | delivered | dead
    attempts: int
    result: Result | None = None


async def final_among(control: Source, event_ids: Sequence[str]) -> set[str]:
    """Which of these events are final already (delivered)."""
    rows = await control.fetch(
        "SELECT event_id FROM webhook_deliveries WHERE event_id = ANY($1::text[]) AND status = ANY($2::text[])",
        list(event_ids), list(FINAL),
    )  # fmt: skip
    return {row["event_id"] for row in rows}


async def targets_of(control: Source, merchant_ids: Iterable[str]) -> dict[str, Target]:
    """Where and how to sign each merchant's webhooks; a merchant with no webhook URL (or gone) is absent."""
    rows = await control.fetch(
        "SELECT id, webhook_url, webhook_secret FROM merchants WHERE id = ANY($1::text[]) AND webhook_url <> ''",
        list(set(merchant_ids)),
    )
    return {row["id"]: Target(row["webhook_url"], row["webhook_secret"]) for row in rows}


async def record(control: Source, batch: Sequence[Delivery]) -> None:
    """Upsert each event's row (one per event id in ``batch``); a row already final is left as it is (a late
    duplicate cannot undo it)."""
    if not batch:
        return
    results = [delivery.result or Result(ok=False) for delivery in batch]
    await control.execute(
        _RECORD,
        [d.event.id for d in batch], [d.event.merchant for d in batch], [d.event.type for d in batch],
        [d.status for d in batch], [d.attempts for d in batch], [r.status for r in results],
        [r.error for r in results],
    )  # fmt: skip
