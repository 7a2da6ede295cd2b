"""The ASGI application: a stack you can read top to bottom."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from gateway import http
from gateway.auth import KeyCache
from gateway.broker import BrokerProbe
from gateway.edge import Edge
from gateway.middleware import RequestContext
from gateway.probes import open_probe
from gateway.routes import routes
from gateway.state import Resources
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.runtime import settle_gc
from shards.pools import open_shards


def _lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout, max_connections=256,
        )  # fmt: skip
        amqp = BrokerProbe(settings.amqp_url, settings.db_timeout)
        amqp.start()
        try:
            async with open_shards(settings) as shards:
                edge = Edge(client, settings.idempotency_lock_ms, settings.idempotency_cache_s)
                keys = KeyCache(shards.control)
                keys.start()
                try:
                    # "Connected", not "not closed": a robust connection is never closed while it retries.
                    async with open_probe(settings, edge.ping, lambda: amqp.connected.is_set()) as probe:
                        resources = Resources(settings, shards, edge, keys, amqp, probe)
                        settle_gc()
                        yield {"resources": resources}
                finally:
                    await keys.close()
                    await edge.close()
        finally:
            await amqp.close()
            await client.aclose()

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
