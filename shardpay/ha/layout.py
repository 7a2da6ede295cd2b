"""Where everything of the HA topology lives: one directory and one block of ports, derived from three settings.

``SHARDPAY_HA_DIR`` (default ``.ha`` in the current directory) holds ``etc/`` (configuration rendered from
``infra/ha``), ``data/`` (etcd, every PostgreSQL node, Redis, RabbitMQ), ``log/`` (one file per server) and
``run/`` (pid files, sockets, ``topology.json``). ``SHARDPAY_HA_PORT`` (default 7400) is the first port of the
block, laid out as below, so nothing meets the shared servers on 5432, 6379, 5672 or shardpay's 8000/8100:

    +0, +1      etcd client, peer              +20        PSP simulator
    +2          HAProxy statistics (HTTP)      +50..+52   Redis primary, replica, Sentinel
    +10         gateways behind HAProxy        +60, +61   RabbitMQ AMQP, Erlang distribution
    +11..+18    gateway instances              +100+10k   cluster k (control 0, shard n is n+1):
                                                            +0 writes (primary), +1 reads (replicas),
                                                            +2.. PostgreSQL nodes, +6.. their Patroni APIs
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shardpay.config import ConfigError, env_int

NODES = ("a", "b")
MAX_GATEWAYS = 8
REDIS_MASTER = "shardpay"


@dataclass(frozen=True)
class Cluster:
    """One Patroni cluster: a primary and a synchronous standby, behind two HAProxy ports."""

    name: str  # "control" or "shard<n>"
    base: int
    databases: tuple[str, ...]
    nodes: tuple[str, ...] = NODES

    @property
    def scope(self) -> str:
        return f"shardpay-{self.name}"

    @property
    def write_port(self) -> int:
        return self.base

    @property
    def read_port(self) -> int:
        return self.base + 1

    def member(self, node: str) -> str:
        return f"{self.name}-{node}"

    def pg_port(self, node: str) -> int:
        return self.base + 2 + self.nodes.index(node)

    def rest_port(self, node: str) -> int:
        return self.base + 6 + self.nodes.index(node)


@dataclass(frozen=True)
class Topology:
    """Everything the servers, the runner and the drills need to agree on; written to ``run/topology.json``."""

    root: str
    port: int = 7400
    shards: int = 2
    gateways: int = 2
    clusters: tuple[Cluster, ...] = ()
    redis: bool = True  # a primary, a replica and Sentinel of our own (else SHARDPAY_REDIS_URL as given)
    rabbitmq: bool = True  # a RabbitMQ node of our own (else SHARDPAY_AMQP_URL as given)
    psp_sim: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)  # applied last (a test's plain DSNs)

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    def cluster(self, name: str) -> Cluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(f"no Patroni cluster named {name!r} in {self.root}")

    @property
    def gateway_port(self) -> int:
        return self.port + 10

    def gateway_instance_port(self, index: int) -> int:
        return self.port + 11 + index

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def etcd_port(self) -> int:
        return self.port

    @property
    def stats_port(self) -> int:
        return self.port + 2

    @property
    def psp_port(self) -> int:
        return self.port + 20

    def redis_port(self, node: str) -> int:
        return self.port + 50 + NODES.index(node)

    @property
    def sentinel_port(self) -> int:
        return self.port + 52

    @property
    def amqp_port(self) -> int:
        return self.port + 60

    @property
    def rabbit_node(self) -> str:
        return f"shardpay{self.port}@localhost"

    @property
    def control_socket(self) -> Path:
        return self.path("run", "control.sock")

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> Topology:
        data: dict[str, Any] = orjson.loads(raw)
        clusters = tuple(
            Cluster(c["name"], c["base"], tuple(c["databases"]), tuple(c["nodes"])) for c in data["clusters"]
        )
        return cls(**{**data, "clusters": clusters})


def dsn(port: int, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def standard(root: Path, port: int, shards: int, gateways: int) -> Topology:
    """``make run-ha``'s topology: the control database and every shard each a Patroni cluster of two."""
    if not 1 <= gateways <= MAX_GATEWAYS:
        raise ConfigError(f"Config 'SHARDPAY_HA_GATEWAYS' has value '{gateways}'. Must be 1..{MAX_GATEWAYS}.")
    control = Cluster("control", port + 100, ("shardpay_control", "shardpay_psp"))
    shard_clusters = tuple(Cluster(f"shard{n}", port + 110 + 10 * n, (f"shardpay_shard_{n}",)) for n in range(shards))
    return Topology(str(root), port, shards, gateways, (control, *shard_clusters))


def from_env(env: dict[str, str] | None = None) -> Topology:
    """The standard topology as ``SHARDPAY_HA_DIR``, ``SHARDPAY_HA_PORT``, ``SHARDPAY_HA_SHARDS`` and
    ``SHARDPAY_HA_GATEWAYS`` describe it."""
    e = dict(os.environ) if env is None else env
    root = Path(e.get("SHARDPAY_HA_DIR", ".ha")).resolve()
    port = env_int(e, "HA_PORT", 7400, minimum=1024)
    if port + 100 + 10 * 64 > 65535:
        raise ConfigError(f"Config 'SHARDPAY_HA_PORT' has value '{port}'. The block needs 740 ports above it.")
    shards = env_int(e, "HA_SHARDS", 2, minimum=1)
    return standard(root, port, shards, env_int(e, "HA_GATEWAYS", 2, minimum=1))


def load(env: dict[str, str] | None = None) -> Topology:
    """The running topology, as its runner wrote it (for ``shardpay drill`` and ``shardpay ha status``)."""
    topology = from_env(env)
    written = topology.path("run", "topology.json")
    if not written.exists():
        raise ConfigError(f"no HA topology runs under {topology.root} ({written} is missing): start `make run-ha`")
    return Topology.from_json(written.read_bytes())
