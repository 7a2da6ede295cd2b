"""Health, readiness, metrics, the supported currencies and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from gateway import guard, http, metrics, openapi
from gateway.probes import OutboxLag
from gateway.routes import route
from gateway.state import Resources, resources
from shardpay.domain.money import CURRENCIES
from shardpay.services.outcome import Caller, Outcome


async def healthz(request: Request) -> Response:
    return http.json_response(200, b'{"status":"ok"}')


async def readyz(request: Request) -> Response:
    """Every shard, the control DB, Redis and RabbitMQ, as this process's last probe saw them (gateway.probes)."""
    checks = (await resources(request).probe.snapshot()).checks()
    ready = all(checks.values())
    body = orjson.dumps({"status": "ready" if ready else "unavailable", "checks": checks})
    return http.json_response(200 if ready else 503, body, None if ready else {"Retry-After": "1"})


@dataclass(frozen=True)
class ShardFamilies:
    """Gauges computed at scrape time, outside the registry: the same text whatever the multiprocess mode.
    ``lags[n]`` is shard n's, None if it is down; a down shard has no outbox samples rather than stale ones."""

    lags: Sequence[OutboxLag | None]

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("shardpay_shard_up", "1 if the shard answered the outbox probe", labels=["shard"])
        rows = GaugeMetricFamily(
            "shardpay_outbox_unpublished",
            "Outbox rows not yet published, an upper bound: newest seq - oldest unpublished seq + 1",
            labels=["shard"],
        )
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
    lags = (await res.probe.snapshot()).lags
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
