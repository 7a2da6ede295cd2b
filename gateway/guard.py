"""Around every /v1 handler: authenticate, rate-limit, and (for writes) make it idempotent.

A write costs one Redis round trip before the handler (GCRA + lock, or the cached response) and one after
(cache the final response, or release the lock). The durable guarantee is in the handler's own transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import idempotency
from gateway import http
from gateway.state import Resources, resources
from idempotency import Begin, State, Stored
from ratelimit import Decision
from shardpay.domain.errors import ApiError
from shardpay.services.outcome import Caller, Outcome, key_in_use, key_reused
from shards.control import Merchant

Write = Callable[[Resources, Caller, dict[str, Any]], Awaitable[Outcome]]
Read = Callable[[Resources, Caller, Request], Awaitable[Outcome]]
Endpoint = Callable[[Request], Awaitable[Response]]
_LIMITED = ApiError(429, "rate_limit_error", "rate_limited", "Too many requests; slow down and retry later.")


def _decision(res: Resources, merchant: Merchant, reply: Any) -> Decision:
    if reply is not None:
        return Decision.from_reply(reply, merchant.burst)
    if res.settings.ratelimit_fail_open:
        return Decision.unlimited(merchant.burst)
    raise ApiError.unavailable("dependency_unavailable", "Rate limiting is unavailable; retry.")


def _headers(outcome: Outcome, decision: Decision) -> dict[str, str]:
    headers = decision.headers()
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


async def _run(res: Resources, call: Awaitable[Outcome]) -> Outcome:
    try:
        async with asyncio.timeout(res.settings.request_timeout):
            return await call
    except TimeoutError:
        message = "The request timed out; retry with the same key."
        raise ApiError.unavailable("dependency_unavailable", message) from None


class WriteEndpoint:
    """A POST route's handler behind authentication, rate limiting and idempotency, as a plain ASGI app.

    Starlette's Route calls an ASGI app as it is: no Request to build, no Response object, no exception wrapper
    of its own (errors are answered here, and anything else reaches RequestContext's 500 guard). Every POST
    goes through here, so that is most of the gateway's requests.
    """

    def __init__(self, handler: Write, path: str = "") -> None:
        self.handler = handler
        self.path = path

    def at(self, path: str) -> WriteEndpoint:
        """The same endpoint, labelling its requests with ``path`` for logs and metrics."""
        return WriteEndpoint(self.handler, path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[http.ROUTE] = self.path
        res: Resources = scope["state"]["resources"]
        rid: str = scope[http.REQUEST_ID]
        merchant = await res.merchants.authenticate(http.header(scope, b"authorization"))
        scope[http.MERCHANT] = merchant.id
        key = http.header(scope, b"idempotency-key")
        if not idempotency.valid_key(key):
            decision = _decision(res, merchant, await res.edge.read(merchant.id, merchant.rate, merchant.burst))
            await http.send_error(send, _bad_key(key), rid, decision.headers())
            return
        assert key is not None
        reply, begin = await res.edge.write(merchant.id, merchant.rate, merchant.burst, key)
        decision = _decision(res, merchant, reply)
        try:
            outcome = await _write(res, scope, receive, merchant, key, begin, decision, self.handler)
        except ApiError as error:
            await http.send_error(send, error, rid, decision.headers())
            return
        await http.send_json(send, outcome.status, outcome.body, _headers(outcome, decision))


def write(handler: Write) -> WriteEndpoint:
    return WriteEndpoint(handler)


async def _write(
    res: Resources, scope: Scope, receive: Receive, merchant: Merchant, key: str, begin: Begin | None,
    decision: Decision, handler: Write,
) -> Outcome:  # fmt: skip
    if not decision.allowed:
        raise dataclasses.replace(_LIMITED, headers=decision.headers())
    caller: Caller | None = None
    outcome: Outcome | None = None
    try:
        params = await http.read_json(receive)
        fingerprint = idempotency.fingerprint("POST", scope["path"], params)
        caller = Caller(merchant.id, scope[http.REQUEST_ID], key, fingerprint)
        if begin is not None and begin.state is State.CACHED:
            return _replay(caller, begin)
        if begin is not None and begin.state is State.LOCKED:
            raise key_in_use()
        outcome = await _run(res, handler(res, caller, params))
        return outcome
    finally:
        if begin is not None and begin.state is State.ACQUIRED:
            # Whatever happened (bad body, client gone, cancelled): the lock is released, or the key would
            # answer 409 until it expired. No shield needed: the edge queues the call for its next pipeline
            # before it awaits anything, and a queued call goes out even if its caller stops waiting.
            await _finish(res, merchant.id, key, begin, caller, outcome)


def _replay(caller: Caller, begin: Begin) -> Outcome:
    assert begin.stored is not None
    if begin.stored.fingerprint != caller.fingerprint:
        raise key_reused()
    return Outcome(begin.stored.status, begin.stored.body, stored=True, replayed=True)


async def _finish(
    res: Resources, merchant_id: str, key: str, begin: Begin, caller: Caller | None, outcome: Outcome | None
) -> None:
    cache = caller is not None and outcome is not None and outcome.stored and outcome.final and not outcome.replayed
    stored = Stored(caller.print, outcome.status, outcome.body) if cache and caller and outcome else None
    await res.edge.finish(merchant_id, key, begin.token, stored)


def _bad_key(key: str | None) -> ApiError:
    if key is None or key == "":
        return ApiError.invalid("Idempotency-Key", "POST requests need an Idempotency-Key header.",
                                code="idempotency_key_missing")  # fmt: skip
    return ApiError.invalid("Idempotency-Key", "'Idempotency-Key' must be 1 to 255 printable ASCII characters.")


def read(handler: Read) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        res = resources(request)
        merchant = await res.merchants.authenticate(request.headers.get("authorization"))
        request.scope[http.MERCHANT] = merchant.id
        decision = _decision(res, merchant, await res.edge.read(merchant.id, merchant.rate, merchant.burst))
        try:
            if not decision.allowed:
                raise dataclasses.replace(_LIMITED, headers=decision.headers())
            outcome = await _run(res, handler(res, Caller(merchant.id, http.request_id(request)), request))
        except ApiError as error:
            return http.error_response(error, http.request_id(request), decision.headers())
        return http.json_response(outcome.status, outcome.body, _headers(outcome, decision))

    return endpoint
