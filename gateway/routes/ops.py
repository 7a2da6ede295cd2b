"""Health, readiness, metrics, the supported currencies and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from gateway import drain, guard, http, metrics, openapi
from gateway.probes import OutboxLag, Snapshot
from gateway.routes import route
from gateway.state import Resources, resources
from shardpay.domain.money import CURRENCIES
from shardpay.services.outcome import Caller, Outcome


async def healthz(request: Request) -> Response:
    return http.json_response(200, b'{"status":"ok"}')


async def readyz(request: Request) -> Response:
    """Every shard, the control DB, Redis and RabbitMQ, as this process's last probe saw them (gateway.probes);
    and, in ``details``, the PSP's circuit breakers: any not closed makes the status 'degraded' (still 200:
    transfers keep working, and payments wait in 'processing')."""
    if drain.draining():  # leaving the load balancer (gateway.drain): still serving, soon stopping
        return http.json_response(503, b'{"status":"draining","checks":{},"details":{}}', {"Retry-After": "1"})
    res = resources(request)
    snapshot = await res.probe.snapshot()
    checks = snapshot.checks()
    psp = psp_breakers(res, snapshot)
    ready = all(checks.values())
    status = "unavailable" if not ready else "degraded" if set(psp.values()) - {"closed"} else "ready"
    body = orjson.dumps({"status": status, "checks": checks, "details": {"psp": psp}})
    return http.json_response(200 if ready else 503, body, None if ready else {"Retry-After": "1"})


def psp_breakers(res: Resources, snapshot: Snapshot) -> dict[str, str]:
    """Each PSP operation's breaker, worst first: the executors' (as published) and this process's own."""
    found = dict(snapshot.psp or {})
    found.update((name, breaker.state.value) for name, breaker in res.psp_breakers.items())
    return found


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


@dataclass(frozen=True)
class BreakerFamilies:
    """The PSP's circuit breakers, per operation: 0 closed, 1 half open, 2 open."""

    states: dict[str, str]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("shardpay_psp_breaker_state", "PSP circuit breaker: 0 closed, 1 half open, 2 open",
                                   labels=["operation"])  # fmt: skip
        for operation, state in sorted(self.states.items()):
            family.add_metric([operation], {"closed": 0, "half_open": 1, "open": 2}[state])
        return [family]


async def metrics_endpoint(request: Request) -> Response:
    res = resources(request)
    _update_pools(res)
    snapshot = await res.probe.snapshot()
    body = (metrics.exposition() + generate_latest(ShardFamilies(snapshot.lags))
            + generate_latest(BreakerFamilies(psp_breakers(res, snapshot))))  # fmt: skip
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
