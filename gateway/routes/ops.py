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
from shardpay.domain.settlement import CATEGORIES
from shardpay.services.outcome import Caller, Outcome
from shards.reconcile_runs import LastRun


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
    replica_lags: Sequence[float | None] = ()

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
        dead = GaugeMetricFamily("shardpay_psp_dead_letters", "PSP work dead-lettered on the shard (shardpay dlq)",
                                 labels=["shard"])  # fmt: skip
        for shard, lag in enumerate(self.lags):
            up.add_metric([str(shard)], 0 if lag is None else 1)
            if lag is not None:
                rows.add_metric([str(shard)], lag.unpublished)
                age.add_metric([str(shard)], lag.oldest_age)
                dead.add_metric([str(shard)], lag.dead_letters)
        # Filled where a shard has read replicas (SHARDPAY_SHARD_REPLICA_DSNS); declared everywhere, so dashboards
        # and alerts name a metric that exists.
        replica = GaugeMetricFamily(
            "shardpay_replica_lag_seconds", "Seconds a shard's read replica is behind its primary", labels=["shard"]
        )
        for shard, behind in enumerate(self.replica_lags):
            if behind is not None:
                replica.add_metric([str(shard)], behind)
        return [up, rows, age, dead, replica]


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


@dataclass(frozen=True)
class ReconcileFamilies:
    """The last reconciliation run (``shardpay reconcile``), as the probe last read it; nothing before the first."""

    last: LastRun | None

    def collect(self) -> Iterable[Metric]:
        run = self.last
        if run is None:
            return []
        records = GaugeMetricFamily("shardpay_reconcile_records", "Records per category in the last reconciliation run",
                                    labels=["category"])  # fmt: skip
        for category in CATEGORIES:
            records.add_metric([category], run.counts.get(category, 0))
        info = GaugeMetricFamily("shardpay_reconcile_last_run_info", "The last reconciliation run (always 1)",
                                 labels=["run", "date", "trigger"])  # fmt: skip
        info.add_metric([str(run.id), run.day.isoformat(), run.trigger], 1)
        figures = {
            "timestamp_seconds": ("When the last reconciliation run finished", run.finished_at.timestamp()),
            "fixed": ("Records the last reconciliation run completed", run.fixed),
            "needs_review": ("Records the last reconciliation run left for review", run.needs_review),
            "exit_status": ("The last reconciliation run's exit status: 0 clean, 1 review", run.exit_status),
        }
        gauges = [GaugeMetricFamily(f"shardpay_reconcile_last_run_{name}", text, value=value)
                  for name, (text, value) in figures.items()]  # fmt: skip
        return [records, info, *gauges]


async def metrics_endpoint(request: Request) -> Response:
    res = resources(request)
    _update_pools(res)
    snapshot = await res.probe.snapshot()
    body = (metrics.exposition() + generate_latest(ShardFamilies(snapshot.lags, snapshot.replica_lags))
            + generate_latest(BreakerFamilies(psp_breakers(res, snapshot)))
            + generate_latest(ReconcileFamilies(snapshot.reconcile)))  # fmt: skip
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
