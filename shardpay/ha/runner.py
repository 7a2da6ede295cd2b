"""``shardpay ha up`` (``make run-ha``): every server of the topology, then shardpay's processes on it, until
Ctrl-C or SIGTERM; then shardpay's processes first and the servers in the reverse order of their start.

Servers are not restarted when they die: a drill kills one and starts it again through the runner's control
socket (``shardpay.ha.control``), so the runner owns every process it started and stops them all. shardpay's
own processes are restarted by the supervisor, as under ``make run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson

from shardpay import supervisor
from shardpay.config import Settings
from shardpay.ha import render, servers
from shardpay.ha.control import ControlServer
from shardpay.ha.layout import Topology, dsn
from shardpay.ha.procs import Server, StartFailed
from shardpay.ha.wiring import shardpay_env


def say(event: str, **fields: object) -> None:
    sys.stderr.write(orjson.dumps({"event": event, **fields}).decode() + "\n")


class Fleet:
    """The servers of one topology, started group by group and stopped in reverse."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.groups = servers.all_servers(topology)
        self.by_name = {server.name: server for group in self.groups for server in group}

    async def start(self) -> None:
        for group in self.groups:
            for server in group:
                server.spawn()
            await asyncio.gather(*(self._ready(server) for server in group))
            if group[0].name.startswith("patroni-"):
                await self._clusters_ready()
            say("ha.ready", servers=[server.name for server in group])

    async def _ready(self, server: Server) -> None:
        # RabbitMQ boots Erlang and its database: tens of seconds on a busy machine; the rest take seconds.
        await server.start(within=120.0 if server.name == "rabbitmq" else 90.0)

    async def _clusters_ready(self) -> None:
        for cluster in self.topology.clusters:
            ready = servers.cluster_ready(cluster)
            for _ in range(600):
                if await ready():
                    break
                await asyncio.sleep(0.2)
            else:
                raise StartFailed(f"cluster {cluster.name} has no leader and synchronous standby after 120 s")

    async def stop(self) -> None:
        for group in reversed(self.groups):
            await asyncio.gather(*(server.stop() for server in group))
        await asyncio.to_thread(self._stop_orphans)

    def _stop_orphans(self) -> None:
        """A postmaster whose Patroni was killed outlives it: stop it the way Patroni would have."""
        import subprocess

        for cluster in self.topology.clusters:
            for node in cluster.nodes:
                data = self.topology.path("data", "pg", cluster.member(node))
                if (data / "postmaster.pid").exists():
                    subprocess.run([str(render.PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-s"],
                                   user=render.POSTGRES_USER, capture_output=True, check=False)  # fmt: skip


async def _primary_through(port: int) -> asyncpg.Connection:
    """A connection through a write port once it reaches the primary: HAProxy counts every server up when it
    starts, until its checks (twice 0.5 s) say otherwise, so the first connections may reach the standby."""
    for _ in range(150):
        conn = await asyncpg.connect(dsn(port, "postgres"), timeout=10)
        if not await conn.fetchval("SELECT pg_is_in_recovery()"):
            return conn
        await conn.close()
        await asyncio.sleep(0.2)
    raise StartFailed(f"the write port {port} still reaches a standby after 30 s")


async def create_databases(topology: Topology) -> None:
    """Each cluster's databases, through its write port (the migration creates the tables)."""
    for cluster in topology.clusters:
        admin = await _primary_through(cluster.write_port)
        try:
            have = {row[0] for row in await admin.fetch("SELECT datname FROM pg_database")}
            for name in cluster.databases:
                if name not in have:
                    await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()


def children(topology: Topology) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """shardpay's processes: one gateway per instance port (each a child of its own), then the rest."""
    argv: dict[str, list[str]] = {}
    env: dict[str, dict[str, str]] = {}
    for index in range(topology.gateways):
        name = f"gateway-{index + 1}"
        argv[name] = ["serve"]
        env[name] = {"SHARDPAY_PORT": str(topology.gateway_instance_port(index))}
    for name, args in supervisor.default_children(os.environ).items():
        if name != "gateway" and (name != "psp-sim" or topology.psp_sim):
            argv[name] = list(args)
    return argv, env


# What the topology changes unless the caller set it: HAProxy's health checks would be most of the request log.
DEFAULTS = {"SHARDPAY_LOG_REQUESTS": "false"}


def stack_env(topology: Topology, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of shardpay's processes: the caller's, with the topology's settings over it."""
    return {**DEFAULTS, **(dict(os.environ) if base is None else base), **shardpay_env(topology)}


@contextlib.asynccontextmanager
async def servers_up(topology: Topology) -> AsyncIterator[Fleet]:
    """Every server started and ready (databases created, topology.json written); all stopped on the way out."""
    render.prepare_dirs(topology)
    topology.path("run", "topology.json").write_bytes(topology.to_json())
    fleet = Fleet(topology)
    try:
        await fleet.start()
        await create_databases(topology)
        async with ControlServer(topology, fleet.by_name):
            yield fleet
    finally:
        await asyncio.shield(fleet.stop())
        say("ha.stopped", root=topology.root)


async def run(topology: Topology) -> None:
    """Bring everything up, run shardpay on it until SIGINT or SIGTERM, then stop it all (a signal during the
    start-up stops what has started so far)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    missing = servers.missing_binaries(topology)
    if missing:
        raise StartFailed(f"missing {', '.join(missing)}: run `bash infra/ha/install.sh` (make run-ha does)")
    supervising = asyncio.Event()
    serving = asyncio.create_task(_serve(topology, stop, supervising))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not serving.done() and not supervising.is_set():
        serving.cancel()  # the supervisor stops its children by itself once it runs; before that, cancel
    with contextlib.suppress(asyncio.CancelledError):
        await serving


async def _serve(topology: Topology, stop: asyncio.Event, supervising: asyncio.Event) -> None:
    from events import queue_types
    from shards.migrate import migrate

    env = stack_env(topology)
    async with servers_up(topology):
        settings = Settings.from_env(env)
        await migrate(settings)
        say("ha.queues", **await queue_types.migrate(settings))
        argv, child_env = children(topology)
        say("ha.serving", gateway=topology.gateway_url, root=topology.root, logs=str(topology.path("log")))
        supervising.set()
        await supervisor.supervise(env, argv, child_env, stop=stop, pid_dir=_pid_dir(topology))


def _pid_dir(topology: Topology) -> Path:
    path = topology.path("run", "children")
    path.mkdir(parents=True, exist_ok=True)
    return path
