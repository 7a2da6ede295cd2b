"""The transfer bench's headline arithmetic on made-up CPU tables: CPU per transfer by layer, the capacity plan,
and the bulk scenario's accounting of items. `make bench` runs the real thing against real processes."""

from __future__ import annotations

from typing import Any

from loadtest import bench_capacity as capacity
from loadtest.bench_report import fresh_and_unknown


def _cpu(rows: dict[str, float], busy: float) -> dict[str, Any]:
    return {"busy_cpu_s": busy, "processes": [{"process": name, "cpu_s": s} for name, s in rows.items()]}


CPU = _cpu({
    "gateway worker pid 1": 2.0, "gateway worker pid 2": 1.0, "gateway (uvicorn master)": 0.0,
    "postgres backends (bench shards)": 4.0, "postgres (server processes)": 0.5,
    "postgres backends (bench control database)": 0.3,
    "relay": 0.2, "analytics": 0.2, "notifications": 0.1, "rabbitmq beam.smp (shared)": 0.5,
    "redis-server (shared)": 0.3, "executor": 0.1, "psp-sim": 0.05, "postgres backends (psp-sim database)": 0.05,
    "wrk (load generator)": 0.4, "bench harness (this process)": 0.1,
    "unattributed (exited processes, kernel)": 0.2,
}, busy=10.0)  # fmt: skip


def test_each_process_lands_in_one_layer_and_the_layers_add_up_to_the_machine() -> None:
    head = capacity.headline(CPU, transfers=10_000)
    assert head is not None
    assert head["cpu_per_transfer_us"] == 1000.0  # 10 busy CPU-seconds over 10,000 transfers
    layers = head["layers_us"]
    assert layers == {"gateway": 300.0, "postgres shards": 450.0, "postgres control": 30.0, "events": 100.0,
                      "redis": 30.0, "workers": 20.0, "load generator": 40.0, "harness and rest": 30.0}  # fmt: skip
    assert round(sum(layers.values()), 1) == head["cpu_per_transfer_us"]
    assert head["deployed_us"] == 930.0  # without wrk and the harness
    assert capacity.headline(CPU, transfers=0) is None


def test_the_plan_gives_each_tier_its_cores_with_headroom_and_the_hosts_they_make() -> None:
    head = capacity.headline(CPU, transfers=10_000)
    assert head is not None
    plan = capacity.plan(head, shards=4)
    at_10k = plan["rates"]["10000"]
    assert at_10k["busy_cores"] == 9.3  # 930 µs at 10,000/s
    assert at_10k["cores_with_headroom"]["postgres shards"] == round(4.5 / capacity.UTILISATION, 2)
    assert at_10k["gateway_hosts"] == 2  # at least two behind the load balancer
    assert at_10k["shards"] == 4 and at_10k["database_hosts"] == 4  # two primaries a host, and their standbys
    at_100k = plan["rates"]["100000"]
    assert at_100k["shards"] == 19  # 75 cores of PostgreSQL at 4 a shard
    assert at_100k["database_hosts"] == 2 * 10
    assert plan["target_4_cores_at_10k"] is False


def _loaded(items: dict[str, int], statuses: dict[str, int], unanswered: int = 0) -> dict[str, Any]:
    return {
        "statuses": statuses, "replayed": {}, "socket_errors": {}, "unanswered": unanswered, "items": items,
        "batch": 100, "warmup": {"statuses": {"201": 1}, "replayed": {}, "socket_errors": 0, "unanswered": 0},
        "warmup_items": {"201": 100},
    }  # fmt: skip


def test_bulk_counts_each_item_and_an_unanswered_batch_may_have_moved_all_of_its_items() -> None:
    fresh, unknown = fresh_and_unknown(_loaded({"201": 990, "402": 5, "503": 5}, {"201": 10}, unanswered=2))
    assert fresh == 990 + 100  # the load's and the warm-up's item 201s
    assert unknown == 2 * 100 + 5  # two unanswered batches of 100, and five items answered 503
