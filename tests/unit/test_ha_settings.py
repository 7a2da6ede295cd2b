"""The HA settings' rules, and the HA layout's ports and wiring (pure functions, no servers)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from shardpay.config import ConfigError, Settings
from shardpay.domain.errors import ApiError
from shardpay.ha import layout
from shardpay.ha.wiring import shardpay_env
from shards.errors import on_shard


def test_without_ha_settings_everything_is_as_on_one_server() -> None:
    settings = Settings.from_env({})
    assert (settings.shard_replica_dsns, settings.control_replica_dsn, settings.redis_sentinels) == ((), None, ())
    assert (settings.drain_seconds, settings.amqp_queue_type) == (0.0, "auto")


def test_replica_dsns_line_up_with_the_shards_and_may_leave_one_out() -> None:
    env = {
        "SHARDPAY_SHARD_DSNS": "postgresql://a/x,postgresql://b/y",
        "SHARDPAY_SHARD_REPLICA_DSNS": "postgresql://r/x,",
    }
    assert Settings.from_env(env).shard_replica_dsns == ("postgresql://r/x", None)
    with pytest.raises(ConfigError, match=r"SHARD_REPLICA_DSNS.*Needs 2 entries"):
        Settings.from_env({**env, "SHARDPAY_SHARD_REPLICA_DSNS": "postgresql://r/x"})


def test_sentinels_are_host_port_pairs() -> None:
    env = {"SHARDPAY_REDIS_SENTINELS": "127.0.0.1:26379, s2:26380", "SHARDPAY_REDIS_MASTER": "pay"}
    settings = Settings.from_env(env)
    assert (settings.redis_sentinels, settings.redis_master) == ((("127.0.0.1", 26379), ("s2", 26380)), "pay")
    with pytest.raises(ConfigError, match="'s2' is not host:port"):
        Settings.from_env({"SHARDPAY_REDIS_SENTINELS": "s2"})


def test_draining_needs_one_process_per_instance() -> None:
    assert Settings.from_env({"SHARDPAY_DRAIN_SECONDS": "2", "SHARDPAY_WORKERS": "1"}).drain_seconds == 2.0
    with pytest.raises(ConfigError, match=r"DRAIN_SECONDS.*WORKERS=1"):
        Settings.from_env({"SHARDPAY_DRAIN_SECONDS": "2", "SHARDPAY_WORKERS": "2"})


def test_queue_type_is_one_of_three() -> None:
    with pytest.raises(ConfigError, match=r"AMQP_QUEUE_TYPE.*'stream'"):
        Settings.from_env({"SHARDPAY_AMQP_QUEUE_TYPE": "stream"})


def test_the_standard_topology_keeps_off_the_shared_servers_ports() -> None:
    topology = layout.standard(Path("/ha"), 7400, shards=4, gateways=2)
    ports = {topology.etcd_port, topology.gateway_port, topology.sentinel_port, topology.amqp_port, topology.psp_port}
    for cluster in topology.clusters:
        ports |= {cluster.write_port, cluster.read_port}
        ports |= {cluster.pg_port(n) for n in cluster.nodes} | {cluster.rest_port(n) for n in cluster.nodes}
    assert len(ports) == 5 + 5 * 6 and not ports & {5432, 6379, 5672, 8000, 8100}
    assert layout.Topology.from_json(topology.to_json()) == topology


def test_the_wiring_points_shardpay_at_haproxy_and_sentinel() -> None:
    topology = layout.standard(Path("/ha"), 7400, shards=2, gateways=2)
    env = shardpay_env(topology)
    settings = Settings.from_env(env)
    assert settings.shard_dsns == ("postgresql://postgres@127.0.0.1:7510/shardpay_shard_0",
                                   "postgresql://postgres@127.0.0.1:7520/shardpay_shard_1")  # fmt: skip
    assert settings.shard_replica_dsns[0] == "postgresql://postgres@127.0.0.1:7511/shardpay_shard_0"
    assert settings.control_dsn == "postgresql://postgres@127.0.0.1:7500/shardpay_control"
    assert settings.redis_sentinels == (("127.0.0.1", 7452),) and settings.workers == 1


async def test_a_terminated_backends_state_error_is_a_503_not_a_500() -> None:
    async def call() -> None:
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")

    with pytest.raises(ApiError) as caught:
        await on_shard(3, call())
    assert (caught.value.status, caught.value.code) == (503, "shard_unavailable")
