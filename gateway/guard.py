"""Around every /v1 handler: authenticate, rate-limit, and (for writes) make it idempotent.

A write costs one Redis round trip before the handler (GCRA + lock, or the cached response) and one after
(cache the final response, or release the lock). The durable guarantee is in the handler's own transaction.
Everything, authentication included, answers within ``SHARDPAY_REQUEST_TIMEOUT`` (503 with Retry-After past it).
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
from gateway import body, http
from gateway.state import Resources, resources
from idempotency import Begin, State, Stored
from ratelimit import Decision
from shardpay.domain.errors import ApiError
from shardpay.services.outcome import Caller, Outcome, key_in_use, key_reused
from shards.keys import ApiKey

Write = Callable[[Resources, Caller, dict[str, Any]], Awaitable[Outcome]]
Read = Callable[[Resources, Caller, Request], Awaitable[Outcome]]
Endpoint = Callable[[Request], Awaitable[Response]]
_LIMITED = ApiError(429, "rate_limit_error", "rate_limited", "Too many requests; slow down and retry later.")


def _decision(res: Resources, key: ApiKey, reply: Any) -> Decision:
    if reply is not None:
        return Decision.from_reply(reply, key.merchant.burst)
    if res.settings.ratelimit_fail_open:
        return Decision.unlimited(key.merchant.burst)
    raise ApiError.unavailable("dependency_unavailable", "Rate limiting is unavailable; retry.")


def _headers(outcome: Outcome, decision: Decision) -> dict[str, str]:
    headers = decision.headers()
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def deadline(res: Resources) -> float:
    """The loop time by which the request must have its answer (``SHARDPAY_REQUEST_TIMEOUT`` from now)."""
    return asyncio.get_running_loop().time() + res.settings.request_timeout


async def _run(until: float, call: Awaitable[Outcome]) -> Outcome:
    try:
        async with asyncio.timeout_at(until):
            return await call
    except TimeoutError:
        message = "The request timed out; retry with the same key."
        raise ApiError.unavailable("dependency_unavailable", message) from None


async def _limited(res: Resources, key: ApiKey) -> Decision:
    """A request's rate-limit decision alone (reads, and writes refused before they need the lock)."""
    return _decision(res, key, await res.edge.read(key.id, key.merchant.rate, key.merchant.burst))


class WriteEndpoint:
    """A POST route's handler behind authentication, rate limiting and idempotency, as a plain ASGI app.

    In order: the key is authenticated (within the request's deadline); the body is read (bounded in size and
    time) and parsed, before anything is taken in Redis, so a slow or hostile body holds no lock and no rate
    token; then one Redis round trip takes a rate token and the key's lock (or finds its cached response); the
    handler runs within what is left of the deadline; and the lock is given back or the response cached.

    Starlette's Route calls an ASGI app as it is: no Request to build, no Response object, no exception wrapper
    of its own (errors are answered here, and anything else reaches RequestContext's 500 guard). Every POST
    goes through here, so that is most of the gateway's requests.
    """

    def __init__(self, handler: Write, path: str = "", max_body: int = http.MAX_BODY) -> None:
        self.handler = handler
        self.path = path
        self.max_body = max_body

    def at(self, path: str) -> WriteEndpoint:
        """The same endpoint, labelling its requests with ``path`` for logs and metrics."""
        return WriteEndpoint(self.handler, path, self.max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[http.ROUTE] = self.path
        res: Resources = scope["state"]["resources"]
        rid: str = scope[http.REQUEST_ID]
        until = deadline(res)
        key = await res.keys.authenticate(http.header(scope, b"authorization"), until)
        scope[http.MERCHANT] = key.merchant.id
        within = min(res.settings.body_timeout, until - asyncio.get_running_loop().time())
        raw = await body.read(receive, within, self.max_body)
        idem = http.header(scope, b"idempotency-key")
        try:
            if not idempotency.valid_key(idem):
                raise _bad_key(idem)
            params = body.parse(raw)
        except ApiError as error:
            await http.send_error(send, error, rid, (await _limited(res, key)).headers())
            return
        assert idem is not None
        caller = Caller(key.merchant.id, rid, idem, idempotency.fingerprint("POST", scope["path"], params))
        reply, begin = await res.edge.write(key.id, key.merchant.rate, key.merchant.burst, key.merchant.id, idem)
        headers: dict[str, str] = {}
        outcome: Outcome | None = None
        try:
            decision = _decision(res, key, reply)
            headers = decision.headers()
            outcome = await _write(res, caller, params, begin, decision, until, self.handler)
        except ApiError as error:
            await http.send_error(send, error, rid, headers)
            return
        finally:
            if begin is not None and begin.state in (State.ACQUIRED, State.UNKNOWN):
                # Whatever happened (bad parameters, cancelled, timed out): the lock is given back or the response
                # cached, or the key would answer 409 until the lock expired.
                await res.edge.finish(caller.merchant_id, caller.key, begin, _stored(caller, outcome))
        assert outcome is not None
        await http.send_json(send, outcome.status, outcome.body, _headers(outcome, decision))


def write(handler: Write, max_body: int = http.MAX_BODY) -> WriteEndpoint:
    return WriteEndpoint(handler, max_body=max_body)


async def _write(
    res: Resources, caller: Caller, params: dict[str, Any], begin: Begin | None, decision: Decision, until: float,
    handler: Write,
) -> Outcome:  # fmt: skip
    if not decision.allowed:
        raise dataclasses.replace(_LIMITED, headers=decision.headers())
    if begin is not None and begin.state is State.CACHED:
        return _replay(caller, begin)
    if begin is not None and begin.state is State.LOCKED:
        raise key_in_use()
    return await _run(until, handler(res, caller, params))


def _replay(caller: Caller, begin: Begin) -> Outcome:
    assert begin.stored is not None
    if begin.stored.fingerprint != caller.fingerprint:
        raise key_reused()
    return Outcome(begin.stored.status, begin.stored.body, stored=True, replayed=True)


def _stored(caller: Caller, outcome: Outcome | None) -> Stored | None:
    """What Redis may cache for this key: a final response that the shard's durable record holds."""
    if outcome is None or not outcome.stored or not outcome.final or outcome.replayed:
        return None
    return Stored(caller.print, outcome.status, outcome.body)


def _bad_key(key: str | None) -> ApiError:
    if key is None or key == "":
        return ApiError.invalid("Idempotency-Key", "POST requests need an Idempotency-Key header.",
                                code="idempotency_key_missing")  # fmt: skip
    return ApiError.invalid("Idempotency-Key", "'Idempotency-Key' must be 1 to 255 printable ASCII characters.")


def read(handler: Read) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        res = resources(request)
        until = deadline(res)
        key = await res.keys.authenticate(request.headers.get("authorization"), until)
        request.scope[http.MERCHANT] = key.merchant.id
        headers: dict[str, str] = {}
        try:
            decision = await _limited(res, key)
            headers = decision.headers()
            if not decision.allowed:
                raise dataclasses.replace(_LIMITED, headers=headers)
            outcome = await _run(until, handler(res, Caller(key.merchant.id, http.request_id(request)), request))
        except ApiError as error:
            return http.error_response(error, http.request_id(request), headers)
        return http.json_response(outcome.status, outcome.body, _headers(outcome, decision))

    return endpoint
