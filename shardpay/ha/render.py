"""Configuration files for a topology, rendered from the templates in ``infra/ha`` into ``<HA dir>/etc``."""

from __future__ import annotations

import shutil
from pathlib import Path
from string import Template

import orjson

from shardpay.domain.errors import ApiError
from shardpay.ha.layout import NODES, REDIS_MASTER, Cluster, Topology

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "ha"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "postgres"
RABBITMQ_USER = "rabbitmq"


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def patroni(topology: Topology, cluster: Cluster, node: str) -> Path:
    member = cluster.member(node)
    pg_root = topology.path("data", "pg")
    text = _template("patroni.yml").substitute(
        scope=cluster.scope, member=member, rest_port=cluster.rest_port(node), etcd_port=topology.etcd_port,
        pg_port=cluster.pg_port(node), data_dir=pg_root / member, bin_dir=PG_BIN,
        pgpass=pg_root / f"{member}.pgpass", socket_dir=pg_root / "sock",
    )  # fmt: skip
    return _write(topology.path("etc", f"patroni-{member}.yml"), text)


def _servers(cluster: Cluster) -> str:
    return "\n".join(
        f"    server {cluster.member(node)} 127.0.0.1:{cluster.pg_port(node)} check port {cluster.rest_port(node)}"
        for node in cluster.nodes
    )


def haproxy(topology: Topology) -> Path:
    etc = topology.path("etc")
    gateways = "\n".join(
        f"    server gateway-{i + 1} 127.0.0.1:{topology.gateway_instance_port(i)} check"
        for i in range(topology.gateways)
    )
    text = _template("haproxy.cfg").substitute(
        run_dir=topology.path("run"), etc_dir=etc, stats_port=topology.stats_port,
        gateway_port=topology.gateway_port, gateway_servers=gateways,
    )  # fmt: skip
    section = _template("haproxy-cluster.cfg")
    for cluster in topology.clusters:
        servers = _servers(cluster)
        text += section.substitute(
            name=cluster.name, write_port=cluster.write_port, read_port=cluster.read_port,
            write_servers=servers, read_servers=servers,
        )  # fmt: skip
    _error_page(etc)
    return _write(etc / "haproxy.cfg", text)


def _error_page(etc: Path) -> None:
    error = ApiError.unavailable("dependency_unavailable", "No gateway could answer; retry with the same key.")
    body = orjson.dumps(error.body("")).decode()
    _write(etc / "gateway-503.http", _template("gateway-503.http").substitute(length=len(body) + 1, body=body))


def redis(topology: Topology, node: str) -> Path:
    data = topology.path("data", f"redis-{node}")
    data.mkdir(parents=True, exist_ok=True)
    replicaof = "" if node == NODES[0] else f"replicaof 127.0.0.1 {topology.redis_port(NODES[0])}"
    text = _template("redis.conf").substitute(
        port=topology.redis_port(node), data_dir=data, run_dir=topology.path("run"), node=node, replicaof=replicaof
    )
    return _write(topology.path("etc", f"redis-{node}.conf"), text)


def sentinel(topology: Topology) -> Path:
    data = topology.path("data", "sentinel")
    data.mkdir(parents=True, exist_ok=True)
    text = _template("sentinel.conf").substitute(
        port=topology.sentinel_port, data_dir=data, run_dir=topology.path("run"), master=REDIS_MASTER,
        primary_port=topology.redis_port(NODES[0]),
    )  # fmt: skip
    return _write(topology.path("etc", "sentinel.conf"), text)


def rabbitmq(topology: Topology) -> Path:
    text = _template("rabbitmq.conf").substitute(amqp_port=topology.amqp_port)
    path = _write(topology.path("etc", "rabbitmq.conf"), text)
    _write(topology.path("etc", "rabbitmq-plugins"), "[].\n")  # none: the shared node may own 15672
    return path


def prepare_dirs(topology: Topology) -> None:
    """The directories, each owned by whoever runs in it: PostgreSQL's by postgres (initdb refuses root), which
    creates every node's data directory inside; RabbitMQ's by rabbitmq."""
    for name in ("etc", "log", "run", "data"):
        topology.path(name).mkdir(parents=True, exist_ok=True)
    owned = [(topology.path("data", "pg"), POSTGRES_USER), (topology.path("data", "pg", "sock"), POSTGRES_USER)]
    if topology.rabbitmq:
        owned.append((topology.path("data", "rabbitmq"), RABBITMQ_USER))
    for path, user in owned:
        path.mkdir(exist_ok=True)
        shutil.chown(path, user, user)
    topology.path("data", "pg").chmod(0o700)
