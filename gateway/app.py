"""The ASGI application: a stack you can read top to bottom."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

import psp
from gateway import http
from gateway.auth import KeyCache
from gateway.broker import BrokerProbe
from gateway.edge import Edge
from gateway.middleware import RequestContext
from gateway.probes import open_probe
from gateway.routes import routes
from gateway.state import Resources
from shardpay import redis_client, tracing
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.resilience import Breaker
from shardpay.runtime import settle_gc
from shardpay.services import breakers
from shardpay.services.methods import PaymentMethods
from shards.pools import open_shards


def _lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = redis_client.connect(settings, max_connections=256)
        tracing.configure(settings.otlp_endpoint, "shardpay-gateway")
        amqp = BrokerProbe(settings.amqp_url, settings.db_timeout)
        amqp.start()
        try:
            psp_client = psp.connect(settings)
            async with open_shards(settings) as shards:
                edge = Edge(client, settings.idempotency_lock_ms, settings.idempotency_cache_s)
                keys = KeyCache(shards.control)
                keys.start()
                own = {op: Breaker(op, cooldown=settings.psp_breaker_cooldown)
                       for op in ("hosted_session", "payment_method")}  # fmt: skip
                methods = PaymentMethods(psp_client, own["payment_method"])
                try:
                    # "Connected", not "not closed": a robust connection is never closed while it retries.
                    breakers_now = functools.partial(breakers.read, client)
                    # A lambda: ``amqp.connected`` is a new event once the broker connects.
                    rabbitmq_ok = lambda: amqp.connected.is_set()  # noqa: E731
                    async with open_probe(settings, edge.ping, rabbitmq_ok, breakers_now) as probe:
                        resources = Resources(settings, shards, edge, keys, amqp, probe, psp_client, own, methods)
                        settle_gc()
                        yield {"resources": resources}
                finally:
                    await keys.close()
                    await edge.close()
                    await psp_client.aclose()
        finally:
            await amqp.close()
            await client.aclose()
            tracing.shutdown()

    return lifespan


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = ApiError(405, "invalid_request_error", "method_not_allowed", f"{request.method} is not allowed here.")
    else:
        message = f"Unrecognized request URL: {request.url.path}."
        error = ApiError(404, "invalid_request_error", "resource_missing", message)
    return http.error_response(error, http.request_id(request), dict(exc.headers or {}))


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    return Starlette(
        routes=routes(),
        middleware=[Middleware(RequestContext, log_requests=settings.log_requests, max_requests=settings.max_requests)],
        exception_handlers={404: _http_error, 405: _http_error},
        lifespan=_lifespan(settings),
    )
