"""CPU per transfer, by layer, and the capacity plan it implies (``make bench ARGS="--capacity"``).

The headline figure of every transfer run is the whole machine's CPU per transfer: the busy CPU-seconds of the
measured window (every process, the kernel included) over the transfers it made. The split by layer comes from
the sampler's per-process table. The load generator (wrk) and the bench harness are on the machine but would not
be in a deployment: they are shown, and left out of the capacity plan.

The plan turns each tier's CPU per transfer into the cores it needs at a rate, with headroom: a tier is planned
to run at most ``UTILISATION`` busy (so a burst, a failover that moves a shard's load to its standby, or a host
lost behind the load balancer still fits).
"""

from __future__ import annotations

import math
from typing import Any

# Layers, in the order shown; each process label of the CPU sampler goes to the first layer whose test matches.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gateway", ("gateway",)),
    ("postgres shards", ("postgres backends (bench shards)", "postgres (server processes)")),
    ("postgres control", ("postgres backends (bench control database)",)),
    ("events", ("relay", "notifications", "analytics", "rabbitmq")),
    ("redis", ("redis-server",)),
    ("workers", ("recovery", "executor", "psp-sim", "postgres backends (psp-sim database)", "reconciler")),
    ("load generator", ("wrk",)),
    ("harness and rest", ("",)),  # the bench harness, other processes, the kernel, unattributed
)
# What a deployment runs: the load generator and the harness are this machine's, not the system's.
DEPLOYED = ("gateway", "postgres shards", "postgres control", "events", "redis", "workers")
UTILISATION = 0.6
RATES = (10_000, 100_000)
HOST_CORES = 8  # the hosts the plan is drawn in
SHARD_CORES = 4  # a shard's primary is planned at most this many cores: two shards' primaries to a host


def layer_of(process: str) -> str:
    for layer, starts in LAYERS:
        if any(process.startswith(start) for start in starts):
            return layer
    return LAYERS[-1][0]


def headline(cpu: dict[str, Any], transfers: int) -> dict[str, Any] | None:
    """µs of CPU per transfer, the whole machine's and each layer's, over the measured window."""
    if transfers <= 0 or not cpu.get("busy_cpu_s"):
        return None
    layers = {layer: 0.0 for layer, _ in LAYERS}
    for row in cpu["processes"]:
        layers[layer_of(row["process"])] += row["cpu_s"]
    per = {layer: round(1e6 * seconds / transfers, 1) for layer, seconds in layers.items()}
    return {
        "transfers": transfers,
        "cpu_per_transfer_us": round(1e6 * cpu["busy_cpu_s"] / transfers, 1),
        "deployed_us": round(sum(per[layer] for layer in DEPLOYED), 1),
        "layers_us": per,
    }


def plan(head: dict[str, Any], shards: int) -> dict[str, Any]:
    """Cores per tier at each of ``RATES`` transfers/s, at ``UTILISATION``, and the hosts that makes."""
    rates: dict[str, Any] = {}
    for rate in RATES:
        tiers = {layer: head["layers_us"][layer] * rate / 1e6 for layer in DEPLOYED}
        cores = {layer: round(busy / UTILISATION, 2) for layer, busy in tiers.items()}
        busy_total = sum(tiers.values())
        shard_count = max(shards, math.ceil(cores["postgres shards"] / SHARD_CORES))
        primaries_hosts = math.ceil(shard_count / (HOST_CORES // SHARD_CORES))
        rates[str(rate)] = {
            "busy_cores": round(busy_total, 2),
            "cores_with_headroom": cores,
            "total_cores": round(sum(cores.values()), 2),
            "gateway_hosts": max(2, math.ceil(cores["gateway"] / HOST_CORES)),
            "shards": shard_count,
            # Each primary's synchronous standby on another host, as many again.
            "database_hosts": 2 * primaries_hosts,
            # The control database (a Patroni cluster of its own), the relay, consumers, RabbitMQ, Redis, workers.
            "events_hosts": max(
                1,
                math.ceil(
                    (cores["postgres control"] + cores["events"] + cores["redis"] + cores["workers"]) / HOST_CORES
                ),
            ),
        }
    return {"utilisation": UTILISATION, "host_cores": HOST_CORES, "shard_cores": SHARD_CORES, "rates": rates,
            "target_4_cores_at_10k": head["deployed_us"] * 10_000 / 1e6 <= 4.0}  # fmt: skip


def lines(result: dict[str, Any]) -> list[str]:
    """The summary's headline and, with --capacity, the plan."""
    head = result.get("headline")
    if not head:
        return []
    out = [f"  CPU/transfer {head['cpu_per_transfer_us']:,.0f} µs for the whole machine "
           f"({head['deployed_us']:,.0f} µs without the load generator and the harness), by layer: "
           + ", ".join(f"{layer} {us:,.0f}" for layer, us in head["layers_us"].items())]  # fmt: skip
    ceiling = result.get("ceiling")
    if ceiling and ceiling.get("rps"):
        out.append(
            f"  ceiling     trivial POST, {ceiling['workers']} workers, same run: {ceiling['rps']:,.0f} req/s "
            f"({ceiling['server_us']:.0f} µs server CPU each); transfers/s ÷ ceiling = {result['ceiling_ratio']:.3f}"
        )
    cap = result.get("capacity")
    if cap:
        at = f"{cap['utilisation']:.0%} busy, hosts of {cap['host_cores']} cores"
        out.append(f"  capacity    each tier planned at {at}:")
        for rate, row in cap["rates"].items():
            tiers = ", ".join(f"{layer} {cores:.1f}" for layer, cores in row["cores_with_headroom"].items())
            out.append(
                f"    {int(rate):>7,}/s  {row['busy_cores']:.1f} busy cores, {row['total_cores']:.1f} with headroom "
                f"({tiers}); {row['gateway_hosts']} gateway hosts behind HAProxy, {row['shards']} shards on "
                f"{row['database_hosts']} database hosts (primaries and their synchronous standbys), "
                f"{row['events_hosts']} for the control database, events, Redis and workers"
            )
        out.append(f"    10,000/s on <= 4 cores of measured CPU: {'yes' if cap['target_4_cores_at_10k'] else 'no'}")
    return out
