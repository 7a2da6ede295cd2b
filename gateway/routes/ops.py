"""Health, readiness, metrics, the supported currencies and the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
import orjson
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from gateway import guard, http, metrics, openapi
from gateway.routes import route
from gateway.state import Resources, resources
from shardpay.domain.money import CURRENCIES
from shardpay.services.outcome import Caller, Outcome
from shards.errors import TRANSIENT

# Served by the partial index on unpublished rows, so it stays cheap however large the published history grows.
OUTBOX_LAG = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
    "FROM outbox WHERE published_at IS NULL"
)
# A probe or scrape must not wait on a sick database: past this, it counts as down.
PROBE_TIMEOUT = 1.0
# Any database error counts as down too (say the database was dropped): a probe answers, it never fails with 500.
PROBE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT, asyncpg.PostgresError)


async def healthz(request: Request) -> Response:
    return http.json_response(200, b'{"status":"ok"}')


async def _db_ok(pool: asyncpg.Pool) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await pool.fetchval("SELECT 1")
    except PROBE_ERRORS:
        return False
    return True


async def readyz(request: Request) -> Response:
    res = resources(request)
    shard_ok = await asyncio.gather(*(_db_ok(pool) for pool in res.shards.pools))
    checks = {f"shard_{i}": ok for i, ok in enumerate(shard_ok)}
    checks["control"] = await _db_ok(res.shards.control)
    checks["redis"] = await res.edge.ping()
    # Not "is the connection closed": a robust connection never is while it retries; "connected" tells the truth.
    checks["rabbitmq"] = res.amqp.connected.is_set()
    ready = all(checks.values())
    body = orjson.dumps({"status": "ready" if ready else "unavailable", "checks": checks})
    return http.json_response(200 if ready else 503, body, None if ready else {"Retry-After": "1"})


@dataclass(frozen=True)
class OutboxLag:
    """A shard's unpublished outbox rows and the age of the oldest (0 when there are none)."""

    unpublished: int
    oldest_age: float


async def outbox_lag(pool: asyncpg.Pool) -> OutboxLag | None:
    """None when the shard does not answer within ``PROBE_TIMEOUT``."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            row = await pool.fetchrow(OUTBOX_LAG)
    except PROBE_ERRORS:
        return None
    assert row is not None
    return OutboxLag(int(row[0]), float(row[1]))


@dataclass(frozen=True)
class ShardFamilies:
    """Gauges computed at scrape time, outside the registry: the same text whatever the multiprocess mode.
    ``lags[n]`` is shard n's, None if it is down; a down shard has no outbox samples rather than stale ones."""

    lags: Sequence[OutboxLag | None]

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("shardpay_shard_up", "1 if the shard answered the outbox query", labels=["shard"])
        rows = GaugeMetricFamily("shardpay_outbox_unpublished", "Outbox rows not yet published", labels=["shard"])
        age = GaugeMetricFamily(
            "shardpay_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outbox row (0 if none)",
            labels=["shard"],
        )  # fmt: skip
        for shard, lag in enumerate(self.lags):
            up.add_metric([str(shard)], 0 if lag is None else 1)
            if lag is not None:
                rows.add_metric([str(shard)], lag.unpublished)
                age.add_metric([str(shard)], lag.oldest_age)
        return [up, rows, age]


async def metrics_endpoint(request: Request) -> Response:
    res = resources(request)
    _update_pools(res)
    lags = await asyncio.gather(*(outbox_lag(pool) for pool in res.shards.pools))
    body = metrics.exposition() + generate_latest(ShardFamilies(lags))
    return Response(body, media_type="text/plain; version=0.0.4")


def _update_pools(res: Resources) -> None:
    for index, pool in enumerate(res.shards.pools):
        size = pool.get_size()
        metrics.POOL_SIZE.labels(str(index)).set(size)
        metrics.POOL_IN_USE.labels(str(index)).set(size - pool.get_idle_size())


async def currencies(res: Resources, caller: Caller, request: Request) -> Outcome:
    data = [{"code": code, "minor_unit_digits": digits} for code, digits in sorted(CURRENCIES.items())]
    return Outcome.of(200, {"object": "list", "data": data, "has_more": False})


async def openapi_document(request: Request) -> Response:
    return http.json_response(200, openapi.rendered())


ROUTES = [
    route("/healthz", healthz, "GET"),
    route("/readyz", readyz, "GET"),
    route("/metrics", metrics_endpoint, "GET"),
    route("/v1/currencies", guard.read(currencies), "GET"),
    route("/v1/openapi.json", openapi_document, "GET"),
]
