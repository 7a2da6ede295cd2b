"""shardpay's settings for a topology: the same code as ``make run``, pointed elsewhere.

Writes go to each cluster's HAProxy write port (whichever node Patroni's API calls primary), lag-tolerant reads to
its read port (the healthy replicas), Redis through Sentinel, RabbitMQ at the topology's own node. Nothing else
changes, which is why the same settings, with hosts in them, describe a deployment over several machines.
"""

from __future__ import annotations

from shardpay.ha.layout import REDIS_MASTER, Topology, dsn

# Locks of requests that a killed gateway held block their keys' retries (409) until they expire. The lock needs
# to outlive a request's deadline (SHARDPAY_REQUEST_TIMEOUT, 10 s), not the 30 s default: PostgreSQL's record is
# what keeps a retry from moving money twice.
HA_LOCK_MS = 12_000
# Seconds a gateway answers /readyz with "draining" after SIGTERM, still serving, before it stops: HAProxy checks
# every 0.5 s and takes a server out after two failed checks.
DRAIN_SECONDS = 2.0


def _shard_dsns(topology: Topology) -> tuple[list[str], list[str]]:
    writes: list[str] = []
    reads: list[str] = []
    for n in range(topology.shards):
        cluster = topology.cluster(f"shard{n}")
        writes.append(dsn(cluster.write_port, cluster.databases[0]))
        reads.append(dsn(cluster.read_port, cluster.databases[0]))
    return writes, reads


def shardpay_env(topology: Topology) -> dict[str, str]:
    """Every ``SHARDPAY_*`` setting that differs from ``make run``'s for this topology."""
    env = {
        "SHARDPAY_HOST": "127.0.0.1",
        "SHARDPAY_PORT": str(topology.gateway_port),
        "SHARDPAY_WORKERS": "1",
        "SHARDPAY_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "SHARDPAY_IDEMPOTENCY_LOCK_MS": str(HA_LOCK_MS),
        "SHARDPAY_WEBHOOK_ALLOW_PRIVATE": "true",
        "SHARDPAY_PSP_PORT": str(topology.psp_port),
        "SHARDPAY_PSP_URL": f"http://127.0.0.1:{topology.psp_port}",
        "SHARDPAY_PSP_WEBHOOK_URL": f"{topology.gateway_url}/v1/webhooks/psp",
    }
    if any(cluster.name == "control" for cluster in topology.clusters):
        control = topology.cluster("control")
        env["SHARDPAY_PG"] = f"postgresql://postgres@127.0.0.1:{control.write_port}"
        env["SHARDPAY_CONTROL_DSN"] = dsn(control.write_port, "shardpay_control")
        env["SHARDPAY_CONTROL_REPLICA_DSN"] = dsn(control.read_port, "shardpay_control")
        env["SHARDPAY_PSP_DSN"] = dsn(control.write_port, "shardpay_psp")
    if all(any(c.name == f"shard{n}" for c in topology.clusters) for n in range(topology.shards)):
        writes, reads = _shard_dsns(topology)
        env["SHARDPAY_SHARD_DSNS"] = ",".join(writes)
        env["SHARDPAY_SHARD_REPLICA_DSNS"] = ",".join(reads)
    if topology.redis:
        env["SHARDPAY_REDIS_URL"] = f"redis://127.0.0.1:{topology.redis_port('a')}/0"
        env["SHARDPAY_REDIS_SENTINELS"] = f"127.0.0.1:{topology.sentinel_port}"
        env["SHARDPAY_REDIS_MASTER"] = REDIS_MASTER
    if topology.rabbitmq:
        env["SHARDPAY_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{topology.amqp_port}/"
    return {**env, **topology.extra_env}
