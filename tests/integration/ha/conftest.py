"""A small HA topology of the tests' own, built by the same code as ``make run-ha`` (``shardpay ha up``).

The smallest honest one for a failover drill: etcd, shard 0 a Patroni cluster of two nodes (a primary and a
synchronous standby) behind HAProxy, writes on its primary port and entries reads on its replica port; shard 1,
the control database and the PSP simulator's database plain databases on the shared PostgreSQL; two gateways
behind HAProxy; the shared Redis (the session's database) and RabbitMQ (a vhost of the session's own). The
servers that are missing are installed from Debian's packages first (``infra/ha/install.sh``).

Ports: a block from ``SHARDPAY_TEST_HA_PORT`` (17400), away from ``make run-ha``'s 7400.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from shardpay.config import Settings
from shardpay.ha import layout, servers
from shardpay.ha.layout import Cluster, Topology
from shardpay.ha.runner import stack_env
from shards.pools import Shards, open_shards
from tests.conftest import TEST_PREFIX, TEST_REDIS_URL, drop_databases

REPO = Path(__file__).resolve().parents[3]
PLAIN = "postgresql://postgres@127.0.0.1:5432"
VHOST = f"{TEST_PREFIX}_ha"


def _install(topology: Topology) -> None:
    if not servers.missing_binaries(topology):
        return
    done = subprocess.run(["bash", str(REPO / "infra" / "ha" / "install.sh")], capture_output=True, text=True)
    if done.returncode != 0 or servers.missing_binaries(topology):
        pytest.fail(
            f"cannot install the HA servers from Debian's packages ({', '.join(servers.missing_binaries(topology))} "
            f"missing): infra/ha/install.sh exited {done.returncode}: {done.stderr[-2000:]}"
        )


def _vhost() -> None:
    listed = subprocess.run(["rabbitmqctl", "list_vhosts", "--quiet", "--no-table-headers"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.split()  # fmt: skip
    if VHOST not in listed:
        subprocess.run(["rabbitmqctl", "add_vhost", VHOST], check=True, capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip


def small_topology(root: Path) -> Topology:
    base = int(os.environ.get("SHARDPAY_TEST_HA_PORT", "17400"))
    shard0 = Cluster("shard0", base + 110, (f"{TEST_PREFIX}_ha_shard_0",))
    extra = {
        "SHARDPAY_PG": PLAIN,
        "SHARDPAY_DB_PREFIX": f"{TEST_PREFIX}_ha",
        "SHARDPAY_CONTROL_DSN": f"{PLAIN}/{TEST_PREFIX}_ha_control",
        "SHARDPAY_SHARD_DSNS": f"{layout.dsn(shard0.write_port, shard0.databases[0])},{PLAIN}/{TEST_PREFIX}_ha_shard_1",
        "SHARDPAY_SHARD_REPLICA_DSNS": f"{layout.dsn(shard0.read_port, shard0.databases[0])},",
        "SHARDPAY_PSP_DSN": f"{PLAIN}/{TEST_PREFIX}_ha_psp",
        "SHARDPAY_REDIS_URL": TEST_REDIS_URL,
        "SHARDPAY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{VHOST}",
        "SHARDPAY_POOL_MAX": "6",
    }
    return Topology(str(root), base, shards=2, gateways=2, clusters=(shard0,), redis=False, rabbitmq=False,
                    extra_env=extra)  # fmt: skip


def _wait_ready(proc: subprocess.Popen[bytes], topology: Topology, log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"shardpay ha up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{topology.gateway_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the HA topology was not ready within 240 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def ha_topology() -> Iterator[Topology]:
    """The small topology, running (``shardpay ha up --topology``) for the whole session, then stopped."""
    root = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}-ha-"))
    root.chmod(0o755)  # PostgreSQL runs as postgres and must reach its data directory inside
    topology = small_topology(root)
    _install(topology)
    _vhost()
    settings = Settings.from_env(stack_env(topology))
    asyncio.run(drop_databases(settings, settings.control_dsn, settings.shard_dsns[1], settings.psp_dsn))
    spec = root / "topology.json"
    spec.write_bytes(topology.to_json())
    log = root / "ha-up.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shardpay", "ha", "up", "--topology", str(spec)],
                                env=stack_env(topology), stdout=out, stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip
    try:
        _wait_ready(proc, topology, log)
        yield topology
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ha_settings(ha_topology: Topology) -> Settings:
    return Settings.from_env(stack_env(ha_topology))


@pytest_asyncio.fixture(scope="session")
async def ha_shards(ha_settings: Settings) -> AsyncIterator[Shards]:
    async with open_shards(ha_settings, pool_max=4) as opened:
        yield opened
