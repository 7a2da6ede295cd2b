"""Checkout sessions: a hosted payment page at the PSP, so that card data never reaches shardpay.

The session is registered with a nonce made from the merchant, the idempotency key and the request's
fingerprint, so the same request retried (after a timeout, a crash, Redis losing the key) registers one session
at the PSP and answers the same id; its response is then stored under the key on the key's home shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg
import orjson

import psp
from shardpay.domain.errors import ApiError
from shardpay.resilience import Breaker
from shardpay.services import idempotent, methods
from shardpay.services.outcome import Caller, Outcome, stored_answer
from shards import ledger
from shards.errors import on_shard
from shards.pools import Shards

RETURN_URL_LENGTH = 2048


@dataclass(frozen=True)
class CreateCheckout:
    amount: int
    currency: str
    return_url: str


def session_id(caller: Caller) -> str:
    """The same for the same merchant, key and parameters: the PSP's nonce, and the id the merchant sees."""
    digest = hashlib.sha256(f"{caller.merchant_id}\x1f{caller.key}\x1f{caller.print}".encode()).hexdigest()
    return f"cs_{idempotent.home_slot(caller.merchant_id, caller.key):04x}{digest[:20]}"


async def create(shards: Shards, client: psp.Psp, breaker: Breaker, caller: Caller, cmd: CreateCheckout) -> Outcome:
    home = shards.index_of(idempotent.home_slot(caller.merchant_id, caller.key))
    pool = shards.pool(home)
    earlier = await on_shard(home, ledger.replay(pool, caller.merchant_id, caller.key, caller.print))
    if earlier.outcome != "missing":
        return stored_answer(earlier)
    checkout_id = session_id(caller)
    session = await _register(client, breaker, caller, cmd, checkout_id)
    obj = {"id": checkout_id, "object": "checkout_session", "amount": cmd.amount, "currency": cmd.currency,
           "return_url": cmd.return_url, "psp_session": session.id, "psp_token": session.token,
           "redirect_url": session.url}  # fmt: skip
    body = orjson.dumps(obj).decode()
    try:
        stored = await on_shard(home, _store(pool, caller, body))
    except asyncpg.UniqueViolationError:
        stored = await on_shard(home, ledger.replay(pool, caller.merchant_id, caller.key, caller.print))
    return stored_answer(stored)


async def _register(client: psp.Psp, breaker: Breaker, caller: Caller, cmd: CreateCheckout,
                    checkout_id: str) -> psp.HostedSession:  # fmt: skip
    if not breaker.allow():
        raise ApiError.unavailable("psp_unavailable", "The PSP is unavailable; retry with the same key.",
                                   max(1, round(breaker.retry_in())))  # fmt: skip
    try:
        session = await client.create_hosted_session(
            cmd.amount, cmd.currency, cmd.return_url, methods.reference(caller.merchant_id, checkout_id),
            nonce=checkout_id, request_id=caller.request_id,
        )  # fmt: skip
    except (psp.PspUnavailable, psp.PspOutcomeUnknown, psp.PspMalformed):
        breaker.record(False)
        raise ApiError.unavailable("psp_unavailable", "The PSP did not answer; retry with the same key.") from None
    except psp.PspRejected as exc:
        breaker.record(True)
        raise ApiError.invalid(None, f"The PSP refused the session: {exc}", code="psp_rejected") from None
    breaker.record(True)
    return session


async def _store(pool: asyncpg.Pool, caller: Caller, body: str) -> ledger.Applied:
    row = await pool.fetchrow(
        "SELECT * FROM sp_store_response($1, $2, $3, 201, $4)", caller.merchant_id, caller.key, caller.print, body
    )
    assert row is not None
    return ledger.Applied(row["outcome"], row["status"], row["body"])
