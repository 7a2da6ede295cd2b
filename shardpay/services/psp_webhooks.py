"""The PSP's webhooks (``POST /v1/webhooks/psp``): verified, then applied exactly once, whatever the order.

An event is applied through the same finishing step as the executor's own answer for the same work
(``shardpay.services.psp_work``): whichever arrives first decides, the other changes nothing, and a duplicate or
replayed event changes nothing twice. An event about something shardpay never made (or another kind of event)
is acknowledged and ignored; a shard that is down answers 503, and the PSP retries.
"""

from __future__ import annotations

import psp
from events.logs import emit
from shardpay import ids, tracing
from shardpay.domain.errors import ApiError
from shardpay.services.outcome import Outcome
from shardpay.services.psp_work import KINDS
from shardpay.services.psp_work import Outcome as PspOutcome
from shards.errors import on_shard
from shards.pools import Shards

# event type -> (work kind, the id prefix of its reference, the outcome it reports)
APPLIED: dict[str, tuple[str, str, str]] = {
    "charge.succeeded": ("charge", "po", "succeeded"),
    "charge.failed": ("charge", "po", "failed"),
    "refund.succeeded": ("refund", "re", "succeeded"),
    "refund.failed": ("refund", "re", "failed"),
    "payout.paid": ("payout", "out", "paid"),
    "payout.failed": ("payout", "out", "failed"),
}


def _bad(message: str) -> ApiError:
    return ApiError.invalid(None, message, code="webhook_invalid")


async def receive(shards: Shards, client: psp.Psp, header: str | None, raw: bytes, now: float) -> Outcome:
    try:
        event = client.verify_webhook(header, raw, now)
    except psp.InvalidSignature as exc:
        message = f"The PSP-Signature is invalid or stale: {exc}"
        raise ApiError.invalid(None, message, code="signature_invalid") from None
    except psp.PspMalformed as exc:  # signed, but not an event we can read: nothing to apply
        emit("psp_webhook.malformed", error=str(exc)[:200])
        raise ApiError.invalid(None, f"The event is malformed: {exc}", code="webhook_invalid") from None
    kind_of = APPLIED.get(event.type)
    obj = event.object
    if kind_of is None or not isinstance(obj, psp.Charge | psp.Refund | psp.Payout):
        return _ack(event, "ignored")
    return _ack(event, await _apply(shards, kind_of, obj))


async def _apply(shards: Shards, kind_of: tuple[str, str, str], obj: psp.Charge | psp.Refund | psp.Payout) -> str:
    kind_name, prefix, status = kind_of
    slot = ids.parse(obj.reference, prefix)
    if slot is None:
        return "unknown_reference"
    shard = shards.index_of(slot)
    kind = KINDS[kind_name]
    row = (await on_shard(shard, kind.rows(shards.pool(shard), [obj.reference]))).get(obj.reference)
    if row is None:
        return "unknown_reference"
    if row["status"] != "processing" and row.get("reported", True):
        return "already_final"  # the usual case (the executor's answer came first): no transaction at all
    with tracing.span(f"psp webhook {kind_name}", request_id=row["request_id"], object=obj.reference):
        applied = await kind.finish(shards, row, PspOutcome(status, obj.id, obj.failure_code))
    return "applied" if applied else "already_final"


def _ack(event: psp.WebhookEvent, result: str) -> Outcome:
    emit("psp_webhook", event_id=event.id, type=event.type, result=result)
    return Outcome.of(200, {"received": True, "result": result})
