"""The topology's servers, in the order they start (each waits for the ones before it), and how to tell that
each is ready. Every one is a Debian package's binary; PostgreSQL runs under Patroni as the postgres user."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import Any

import httpx

from shardpay.ha import render
from shardpay.ha.layout import NODES, REDIS_MASTER, Cluster, Topology
from shardpay.ha.procs import Ready, Server

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


async def _http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _tcp_ok(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _redis_ok(port: int, *command: str) -> bool:
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(await client.execute_command(*command))  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, aioredis.RedisError):
        return False
    finally:
        await client.aclose()


async def cluster_state(cluster: Cluster) -> dict[str, Any] | None:
    """Patroni's ``GET /cluster`` from whichever member answers first."""
    for node in cluster.nodes:
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                response = await http.get(f"http://127.0.0.1:{cluster.rest_port(node)}/cluster")
            if response.status_code == 200:
                state: dict[str, Any] = response.json()
                return state
        except httpx.HTTPError:
            continue
    return None


def roles(state: dict[str, Any] | None) -> dict[str, str]:
    """member name -> role ("leader", "sync_standby", "replica"), for the members that are running."""
    members = (state or {}).get("members", [])
    return {m["name"]: m["role"] for m in members if m.get("state") in ("running", "streaming")}


def cluster_ready(cluster: Cluster) -> Ready:
    """A leader and a synchronous standby: writes are acknowledged on two servers from the first one on."""

    async def ready() -> bool:
        found = set(roles(await cluster_state(cluster)).values())
        return {"leader", "sync_standby"} <= found

    return ready


def etcd(topology: Topology) -> Server:
    client, peer = f"http://127.0.0.1:{topology.etcd_port}", f"http://127.0.0.1:{topology.etcd_port + 1}"
    argv = [
        "etcd", "--name", "ha", "--data-dir", str(topology.path("data", "etcd")),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"ha={peer}",
        "--listen-metrics-urls", f"http://127.0.0.1:{topology.etcd_port + 3}",
    ]  # fmt: skip
    return Server("etcd", argv, topology.path("log", "etcd.log"), lambda: _http_ok(f"{client}/health"))


def patroni(topology: Topology, cluster: Cluster, node: str) -> Server:
    config = render.patroni(topology, cluster, node)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(topology.path("data", "pg")), "LANG": "C.UTF-8"}
    member = cluster.member(node)
    rest = f"http://127.0.0.1:{cluster.rest_port(node)}/health"
    log = topology.path("log", f"patroni-{member}.log")
    return Server(f"patroni-{member}", ["patroni", str(config)], log, lambda: _http_ok(rest),
                  user=render.POSTGRES_USER, env=env, cwd=topology.path("data", "pg"))  # fmt: skip


def haproxy(topology: Topology) -> Server:
    config = render.haproxy(topology)
    return Server("haproxy", ["haproxy", "-db", "-f", str(config)], topology.path("log", "haproxy.log"),
                  lambda: _tcp_ok(topology.stats_port), grace=5.0)  # fmt: skip


def redis(topology: Topology, node: str) -> Server:
    config = render.redis(topology, node)
    port = topology.redis_port(node)
    return Server(f"redis-{node}", ["redis-server", str(config)], topology.path("log", f"redis-{node}.log"),
                  lambda: _redis_ok(port, "PING"), grace=5.0)  # fmt: skip


def sentinel(topology: Topology) -> Server:
    config = render.sentinel(topology)
    port = topology.sentinel_port
    return Server("sentinel", ["redis-sentinel", str(config)], topology.path("log", "sentinel.log"),
                  lambda: _sentinel_ok(port), grace=5.0)  # fmt: skip


async def _sentinel_ok(port: int) -> bool:
    """Sentinel knows the primary and a replica to promote (it learns of replicas from the primary's INFO)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        replicas = await client.execute_command("SENTINEL", "replicas", REDIS_MASTER)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, aioredis.RedisError):
        return False
    finally:
        await client.aclose()
    return bool(replicas)


def rabbitmq(topology: Topology) -> Server:
    config = render.rabbitmq(topology)
    home = topology.path("data", "rabbitmq")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": topology.rabbit_node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(topology.amqp_port), "RABBITMQ_DIST_PORT": str(topology.amqp_port + 1),
        "RABBITMQ_CONFIG_FILE": str(config), "RABBITMQ_ENABLED_PLUGINS_FILE": str(config.with_name("rabbitmq-plugins")),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"), "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"), "RABBITMQ_LOGS": "-",
    }  # fmt: skip
    log = topology.path("log", "rabbitmq.log")
    return Server("rabbitmq", [RABBITMQ_SERVER], log, lambda: _tcp_ok(topology.amqp_port),
                  user=render.RABBITMQ_USER, env=env, cwd=home, grace=30.0)  # fmt: skip


def all_servers(topology: Topology) -> list[list[Server]]:
    """Every server, in groups: each group starts once the one before it is ready, and stops after the next."""
    groups: list[list[Server]] = [[etcd(topology)]]
    groups.append([patroni(topology, c, node) for c in topology.clusters for node in c.nodes])
    groups.append([haproxy(topology)])
    if topology.redis:
        groups.append([redis(topology, node) for node in NODES])
        groups.append([sentinel(topology)])
    if topology.rabbitmq:
        groups.append([rabbitmq(topology)])
    return groups


def missing_binaries(topology: Topology) -> list[str]:
    """Binaries the topology needs that this machine lacks (infra/ha/install.sh installs them)."""
    needed = ["etcd", "patroni", "haproxy", str(render.PG_BIN / "initdb")]
    if topology.redis:
        needed += ["redis-server", "redis-sentinel"]
    if topology.rabbitmq:
        needed.append(RABBITMQ_SERVER)
    return [name for name in needed if shutil.which(name) is None]
