"""POST /v1/webhooks/psp: the PSP's signed callbacks. No API key and no Idempotency-Key: the signature is the
authentication, and applying an event is idempotent by itself (``shardpay.services.psp_webhooks``)."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response

from gateway import body, http
from gateway.routes import route
from gateway.state import resources
from shardpay.domain.errors import ApiError
from shardpay.services import psp_webhooks


async def psp_webhook(request: Request) -> Response:
    res = resources(request)
    raw = await body.read(request.receive, res.settings.body_timeout)
    try:
        async with asyncio.timeout(res.settings.request_timeout):
            outcome = await psp_webhooks.receive(
                res.shards, res.psp, request.headers.get("psp-signature"), raw, time.time()
            )
    except TimeoutError:
        raise ApiError.unavailable("dependency_unavailable", "The webhook could not be applied in time.") from None
    return http.json_response(outcome.status, outcome.body)


ROUTES = [route("/v1/webhooks/psp", psp_webhook, "POST")]
