"""Where a transfer is decided: same shard, one ACID transaction; different shards, a saga."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from shardpay import ids
from shardpay.domain.errors import ApiError
from shardpay.domain.events import render_event
from shardpay.services import idempotent, render, saga
from shardpay.services.outcome import Caller, Outcome, key_reused
from shards import ledger, queries
from shards.errors import on_shard
from shards.pools import Shards


@dataclass(frozen=True)
class CreateTransfer:
    source: str
    destination: str
    amount: int
    currency: str
    description: str | None


@dataclass(frozen=True)
class _Route:
    source_slot: int
    source_shard: int
    destination_shard: int

    @property
    def cross(self) -> bool:
        return self.source_shard != self.destination_shard


async def create(shards: Shards, caller: Caller, cmd: CreateTransfer, inline_timeout: float) -> Outcome:
    try:
        route = await _route(shards, caller, cmd)
    except ApiError as error:
        # The destination's shard is down: a retry of a transfer that already happened can still be answered
        # from the source shard's record; a new transfer has to wait for the shard (503).
        stored = await _stored(shards, caller, cmd) if error.status == 503 else None
        if stored is None:
            raise
        return stored
    request = _open_request(caller, cmd, route)
    pool = shards.pool(route.source_shard)
    try:
        applied = await on_shard(route.source_shard, shards.ticks[route.source_shard].open(request))
    except asyncpg.UniqueViolationError:
        # A concurrent request with the same key committed first (Redis was bypassed): answer with its response.
        applied = await on_shard(route.source_shard, ledger.replay(pool, caller.merchant_id, caller.key, caller.print))
    _raise_unstored(applied.outcome, cmd)
    assert applied.status is not None and applied.body is not None
    if applied.outcome == "applied" and route.cross:
        return await _complete_inline(shards, request, inline_timeout)
    if applied.outcome == "replay":
        return Outcome.from_store(applied.status, await _storedas_of_now(shards, applied.body), replayed=True)
    return Outcome.from_store(applied.status, applied.body, replayed=False)


async def _route(shards: Shards, caller: Caller, cmd: CreateTransfer) -> _Route:
    source_slot = ids.parse(cmd.source, "wal")
    destination_slot = ids.parse(cmd.destination, "wal")
    if source_slot is None:
        raise ApiError.not_found("source", cmd.source)
    if destination_slot is None:
        raise ApiError.not_found("destination", cmd.destination)
    if cmd.source == cmd.destination:
        raise ApiError.invalid("destination", "'destination' must differ from 'source'.")
    route = _Route(source_slot, shards.index_of(source_slot), shards.index_of(destination_slot))
    claim = idempotent.claim(shards, caller.merchant_id, caller.key, caller.print, route.source_shard)
    if not route.cross:
        await claim
        return route
    # The source shard cannot see the destination: check it here, before any money moves, while the key is
    # claimed at home (both in their shards' next ticks, side by side).
    dst = route.destination_shard
    claimed, found = await asyncio.gather(
        claim, on_shard(dst, shards.ticks[dst].lookup(cmd.destination)), return_exceptions=True
    )
    if isinstance(claimed, BaseException):
        raise claimed
    if isinstance(found, BaseException):
        raise found
    if found.merchant_id != caller.merchant_id:
        raise ApiError.not_found("destination", cmd.destination)
    if found.currency != cmd.currency:
        raise _mismatch(cmd)
    return route


def _open_request(caller: Caller, cmd: CreateTransfer, route: _Route) -> ledger.OpenTransfer:
    transfer_id = ids.new_id("tr", route.source_slot)
    created = int(time.time())
    status = "processing" if route.cross else "succeeded"
    obj = render.transfer(transfer_id, cmd.source, cmd.destination, cmd.amount, cmd.currency, cmd.description,
                          status, created)  # fmt: skip
    event_id, event_body = render_event("transfer.succeeded", caller.merchant_id, caller.request_id, obj,
                                        route.source_slot, created)  # fmt: skip
    fail_body = orjson.dumps(ApiError.insufficient_funds().body(caller.request_id)).decode()
    return ledger.OpenTransfer(
        caller.merchant_id, caller.key, caller.print, transfer_id, cmd.source, cmd.destination, cmd.amount,
        cmd.currency, cmd.description, caller.request_id, created, route.cross, orjson.dumps(obj).decode(),
        fail_body, event_id, event_body,
    )  # fmt: skip


async def _stored(shards: Shards, caller: Caller, cmd: CreateTransfer) -> Outcome | None:
    slot = ids.parse(cmd.source, "wal")
    assert slot is not None, "_route parsed it already"
    shard = shards.index_of(slot)
    applied = await on_shard(shard, ledger.replay(shards.pool(shard), caller.merchant_id, caller.key, caller.print))
    if applied.outcome == "key_reused":
        raise key_reused()
    if applied.outcome != "replay" or applied.status is None or applied.body is None:
        return None
    return Outcome.from_store(applied.status, applied.body, replayed=True)


def _raise_unstored(outcome: str, cmd: CreateTransfer) -> None:
    """Outcomes that moved nothing and stored nothing: a retry gets the same answer again. ('claimed' here would
    be a claim by this very request on the shard of its own effect, which a request never makes: refused.)"""
    if outcome in ("key_reused", "claimed"):
        raise key_reused()
    if outcome == "source_missing":
        raise ApiError.not_found("source", cmd.source)
    if outcome == "destination_missing":
        raise ApiError.not_found("destination", cmd.destination)
    if outcome == "currency_mismatch":
        raise _mismatch(cmd)


def _mismatch(cmd: CreateTransfer) -> ApiError:
    return ApiError.currency_mismatch(f"Both wallets must hold {cmd.currency}: 'currency' differs from a wallet's.")


async def _complete_inline(shards: Shards, request: ledger.OpenTransfer, limit: float) -> Outcome:
    """Try leg 2 now and answer once it has committed: the transfer has then succeeded, and leg 3 (settling
    transit on the source shard) goes in that shard's next tick without holding the request. If a shard is slow
    or down, answer 'processing' and let recovery finish."""
    row = _row(request)
    try:
        async with asyncio.timeout(limit):
            inbound = await saga.credit(shards, row)
            if inbound != "applied":
                # Leg 2 was fenced off: the answer is 'failed' only once leg 3 has given the source its money back.
                status = await saga.finish(shards, row, inbound)
                return Outcome.from_store(201, _body(row, status), replayed=False)
    except (ApiError, TimeoutError):
        return Outcome.from_store(201, request.ok_body, replayed=False, final=False)
    saga.finish_soon(shards, row, inbound)
    return Outcome.from_store(201, _body(row, "succeeded"), replayed=False)


def _body(row: dict[str, Any], status: str) -> str:
    return orjson.dumps(render.transfer_row(row, status)).decode()


async def _credited(shards: Shards, transfer_id: str, destination: str) -> bool:
    """Has leg 2 applied on the destination shard? (False too if that shard cannot say right now.)"""
    slot = ids.parse(destination, "wal")
    assert slot is not None, f"stored destination {destination!r} is malformed"
    shard = shards.index_of(slot)
    try:
        return await on_shard(shard, queries.inbound(shards.pool(shard), transfer_id)) == "applied"
    except ApiError:
        return False  # the destination shard is down: 'processing' is still true of what the source shard knows


async def as_of_now(shards: Shards, obj: dict[str, Any]) -> dict[str, Any]:
    """A transfer that says 'processing' may be older than leg 2, whose commit made it succeed (the source
    shard's row and stored response change only with leg 3): the object as of now, as the 201 may have said."""
    if obj.get("object") != "transfer" or obj.get("status") != "processing":
        return obj
    if not await _credited(shards, obj["id"], obj["destination"]):
        return obj
    return {**obj, "status": "succeeded"}


async def _storedas_of_now(shards: Shards, body: str) -> str:
    obj = orjson.loads(body)
    now = await as_of_now(shards, obj)
    return body if now is obj else orjson.dumps(now).decode()


def _row(request: ledger.OpenTransfer) -> dict[str, Any]:
    """The transfer as its row reads after leg 1, without reading it back."""
    return {
        "id": request.transfer_id, "merchant_id": request.merchant_id, "source": request.source,
        "destination": request.destination, "amount": request.amount, "currency": request.currency,
        "description": request.description, "status": "processing", "created": request.created,
        "request_id": request.request_id,
    }  # fmt: skip


async def get(shards: Shards, caller: Caller, transfer_id: str) -> Outcome:
    slot = ids.parse(transfer_id, "tr")
    if slot is None:
        raise ApiError.not_found(None, transfer_id)
    shard = shards.index_of(slot)
    row = await on_shard(shard, queries.transfer(shards.pool(shard), transfer_id))
    if row is None or row["merchant_id"] != caller.merchant_id:
        raise ApiError.not_found(None, transfer_id)
    return Outcome.of(200, await as_of_now(shards, render.transfer_row(row)))
