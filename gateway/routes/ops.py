"""Health, readiness, metrics and the supported currencies."""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import guard, http, metrics
from gateway.routes import route
from gateway.state import Resources, resources
from shardpay.domain.money import CURRENCIES
from shardpay.services.outcome import Caller, Outcome
from shards.errors import TRANSIENT


async def healthz(request: Request) -> Response:
    return http.json_response(200, b'{"status":"ok"}')


async def _db_ok(pool: object) -> bool:
    try:
        async with asyncio.timeout(1.0):
            await pool.fetchval("SELECT 1")  # type: ignore[attr-defined]
    except TRANSIENT:
        return False
    return True


async def readyz(request: Request) -> Response:
    res = resources(request)
    shard_ok = await asyncio.gather(*(_db_ok(pool) for pool in res.shards.pools))
    checks = {f"shard_{i}": ok for i, ok in enumerate(shard_ok)}
    checks["control"] = await _db_ok(res.shards.control)
    checks["redis"] = await res.edge.ping()
    checks["rabbitmq"] = res.amqp is not None and not res.amqp.is_closed
    ready = all(checks.values())
    body = orjson.dumps({"status": "ready" if ready else "unavailable", "checks": checks})
    return http.json_response(200 if ready else 503, body, None if ready else {"Retry-After": "1"})


async def metrics_endpoint(request: Request) -> Response:
    _update_pools(resources(request))
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")


def _update_pools(res: Resources) -> None:
    for index, pool in enumerate(res.shards.pools):
        size = pool.get_size()
        metrics.POOL_SIZE.labels(str(index)).set(size)
        metrics.POOL_IN_USE.labels(str(index)).set(size - pool.get_idle_size())


async def currencies(res: Resources, caller: Caller, request: Request) -> Outcome:
    data = [{"code": code, "minor_unit_digits": digits} for code, digits in sorted(CURRENCIES.items())]
    return Outcome.of(200, {"object": "list", "data": data, "has_more": False})


ROUTES = [
    route("/healthz", healthz, "GET"),
    route("/readyz", readyz, "GET"),
    route("/metrics", metrics_endpoint, "GET"),
    route("/v1/currencies", guard.read(currencies), "GET"),
]
