"""Prometheus metrics. Under several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR and every worker's
samples are summed at scrape time (``shardpay run`` does this)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("shardpay_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "shardpay_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)  # fmt: skip
POOL_SIZE = Gauge("shardpay_shard_pool_connections", "Open connections per shard pool", ["shard"],
                  multiprocess_mode="livesum")  # fmt: skip
POOL_IN_USE = Gauge("shardpay_shard_pool_in_use", "Connections in use per shard pool", ["shard"],
                    multiprocess_mode="livesum")  # fmt: skip


# (method, route, status) -> its counter and histogram: ``labels()`` validates and locks on every call.
_CHILDREN: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe(method: str, route: str, status: int, seconds: float) -> None:
    children = _CHILDREN.get((method, route, status))
    if children is None:
        labels = (method, route, str(status))
        children = _CHILDREN[(method, route, status)] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
    children[0].inc()
    children[1].observe(seconds)


def exposition() -> bytes:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
