"""The cross-shard transfer saga after its first leg: credit the destination shard, then settle or compensate.

Leg 1 (source -> transit, on the source shard) opens the transfer (``shardpay.services.transfers``). Leg 2
(interchange -> destination) is applied at most once per transfer on the destination shard; once it has
applied, the transfer has succeeded. Leg 3 settles transit into interchange on the source shard, or, if
recovery fenced leg 2 off, gives the money back to the source. Every leg is one local transaction and may run
again after a crash without effect.
"""

from __future__ import annotations

import asyncio

import orjson

from shardpay import ids, tracing
from shardpay.domain.events import render_event
from shardpay.services import render
from shardpay.services.render import Row
from shards import ledger
from shards.errors import on_shard
from shards.pools import Shards


def _shard_of(shards: Shards, object_id: str, prefix: str) -> int:
    slot = ids.parse(object_id, prefix)
    assert slot is not None, f"stored id {object_id!r} is malformed"
    return shards.index_of(slot)


def _inbound(transfer: Row) -> ledger.Inbound:
    return ledger.Inbound(
        transfer["id"], transfer["merchant_id"], transfer["destination"], transfer["amount"], transfer["currency"]
    )


async def settle(shards: Shards, transfer: Row) -> str:
    """Run leg 2 then leg 3 (each in its shard's next tick); returns the transfer's final status."""
    return await finish(shards, transfer, await credit(shards, transfer))


async def credit(shards: Shards, transfer: Row) -> str:
    """Leg 2 alone, in the destination shard's next tick: 'applied' (the transfer has succeeded) or 'aborted'."""
    dst = _shard_of(shards, transfer["destination"], "wal")
    with tracing.span("saga leg 2", request_id=_trace_of(transfer), transfer=transfer["id"]):
        return await on_shard(dst, shards.ticks[dst].credit(_inbound(transfer)))


def _trace_of(transfer: Row) -> str | None:
    """Recovery's legs join their transfer's trace; the gateway's are already in it (its request's span)."""
    return None if tracing.in_span() else transfer["request_id"]


async def abort(shards: Shards, transfer: Row) -> str:
    """Fence leg 2 off on the destination shard, then finish with whatever it holds (recovery's last resort)."""
    dst = _shard_of(shards, transfer["destination"], "wal")
    inbound = await on_shard(dst, ledger.fence_inbound(shards.pool(dst), _inbound(transfer)))
    return await finish(shards, transfer, inbound)


async def finish(shards: Shards, transfer: Row, inbound: str) -> str:
    src, step = _leg_three(shards, transfer, inbound)
    with tracing.span("saga leg 3", request_id=_trace_of(transfer), transfer=transfer["id"]):
        return await on_shard(src, shards.ticks[src].finish(step))


def finish_soon(shards: Shards, transfer: Row, inbound: str) -> None:
    """Leg 3 in the source shard's next tick, with nobody waiting: once leg 2 has applied, the transfer has
    succeeded and its request is answered; leg 3 only settles transit into interchange on the source shard. If
    that tick fails (the shard went down, the process stopped), recovery runs leg 3 after
    ``saga_recovery_after``, as for any transfer a gateway left half done."""
    src, step = _leg_three(shards, transfer, inbound)
    shards.ticks[src].finish_soon(step).add_done_callback(_recovery_finishes_it)


def _recovery_finishes_it(future: asyncio.Future[ledger.Done]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not report it: the transfer stays 'debited' for recovery


def _leg_three(shards: Shards, transfer: Row, inbound: str) -> tuple[int, ledger.Finish]:
    status = "succeeded" if inbound == "applied" else "failed"
    obj = render.transfer_row(transfer, status)
    slot = ids.parse(transfer["id"], "tr")
    assert slot is not None
    event_id, event_body = render_event(
        f"transfer.{status}", transfer["merchant_id"], transfer["request_id"], obj, slot
    )
    step = ledger.Finish(transfer["id"], inbound, orjson.dumps(obj).decode(), event_id, event_body)
    return shards.index_of(slot), step
