"""The benchmark's own shardpay stack: databases, broker vhost, Redis database, seeded wallets, processes.

Everything is private to the benchmark: databases ``<prefix>_control`` / ``<prefix>_shard_<n>`` and the PSP
simulator's ``<prefix>_psp`` (dropped and re-created per run), Redis database 14 (flushed), RabbitMQ vhost
``shardpay_bench`` (deleted and re-created, so no stale event reaches the new run), its own gateway port and its
own simulator on the gateway's port + 100, whose webhooks go to the bench's gateway. Nothing here touches
another stack's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from shardpay import supervisor
from shardpay.config import Settings
from shardpay.ids import new_id
from shards.router import SlotMap

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_DB = 14  # dev stacks use 0, the test suite 15
VHOST = "shardpay_bench"
CURRENCY = "USD"
SEED_REF = "bench-seed"
# The processes `shardpay run` supervises (started here one by one, so each one's CPU can be told apart).
CHILDREN = supervisor.CHILDREN
# The simulator listens this far above the gateway: 8400 beside the bench's 8300, clear of `make run`'s 8000/8100.
PSP_PORT_OFFSET = 100
# What drop_databases drops of a prefix: the control and shard databases and the simulator's.
STACK_DATABASES = r"(control|shard_[0-9]+|psp)"


def psp_port(port: int) -> int:
    """The bench simulator's port for a bench gateway on ``port``."""
    return port + PSP_PORT_OFFSET


class BenchError(RuntimeError):
    """The benchmark cannot go on (a service is missing, a process died, a step timed out)."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def stack_env(prefix: str, shards: int, port: int, workers: int, extra: dict[str, str]) -> dict[str, str]:
    """The environment for every shardpay process of the benchmark; no SHARDPAY_* of the caller leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDPAY_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        {
            "SHARDPAY_PG": PG,
            "SHARDPAY_DB_PREFIX": prefix,
            "SHARDPAY_SHARDS": str(shards),
            "SHARDPAY_HOST": "127.0.0.1",
            "SHARDPAY_PORT": str(port),
            "SHARDPAY_WORKERS": str(workers),
            "SHARDPAY_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "SHARDPAY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{VHOST}",
            "SHARDPAY_LOG_REQUESTS": "false",
            "SHARDPAY_DEFAULT_RATE": "1000000",
            "SHARDPAY_DEFAULT_BURST": "1000000",
            **psp_env(prefix, port),
        }
    )
    env.update({f"SHARDPAY_{k}": v for k, v in extra.items()})
    return env


def psp_env(prefix: str, port: int) -> dict[str, str]:
    """The bench's own PSP simulator: its port, its database, its webhooks to the bench gateway (not `make run`'s
    on 8000), and shardpay's processes pointed at it. Its request log is off with the gateway's
    (SHARDPAY_LOG_REQUESTS covers both)."""
    sim = psp_port(port)
    return {
        "SHARDPAY_PSP_HOST": "127.0.0.1",
        "SHARDPAY_PSP_PORT": str(sim),
        "SHARDPAY_PSP_URL": f"http://127.0.0.1:{sim}",
        "SHARDPAY_PSP_PUBLIC_URL": f"http://127.0.0.1:{sim}",
        "SHARDPAY_PSP_DSN": f"{PG}/{prefix}_psp",
        "SHARDPAY_PSP_WEBHOOK_URL": f"http://127.0.0.1:{port}/v1/webhooks/psp",
    }


# ---------------------------------------------------------------------------------------------------- services


def ensure_wrk() -> str:
    """wrk from Debian's packages: installed with apt-get if missing (apt-get update first if needed)."""
    found = shutil.which("wrk")
    if found:
        return found
    say("wrk is missing: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(install, env=env, check=True, capture_output=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk did not install (apt-get install -y wrk)")
    return found


def check_services() -> None:
    """PostgreSQL, Redis and RabbitMQ must answer on 127.0.0.1 (`make bench` runs infra/services.sh first)."""
    import socket

    for name, port in (("PostgreSQL", 5432), ("Redis", 6379), ("RabbitMQ", 5672)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            raise BenchError(f"{name} is not answering on 127.0.0.1:{port}: run `make services` first") from None


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # As uvicorn binds: connections of the last run still in TIME_WAIT do not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reset_redis() -> None:
    import redis

    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}", socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


def reset_vhost() -> None:
    """A fresh RabbitMQ vhost, so a previous run's queued events never reach this run's consumers."""

    def ctl(*args: str, check: bool = True) -> None:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=120)
        if check and done.returncode != 0:
            raise BenchError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.decode().strip()}")

    if not shutil.which("rabbitmqctl"):
        raise BenchError("rabbitmqctl not found (RabbitMQ is installed by `make services`)")
    ctl("delete_vhost", VHOST, check=False)
    ctl("add_vhost", VHOST)
    ctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")


async def drop_databases(prefix: str, pattern: str = STACK_DATABASES) -> list[str]:
    """Drop this prefix's databases (and only those): the simulator re-creates and migrates its own at start."""
    admin = await asyncpg.connect(f"{PG}/postgres")
    try:
        rows = await admin.fetch(
            "SELECT datname FROM pg_database WHERE datname ~ $1", f"^{re.escape(prefix)}_{pattern}$"
        )
        names = sorted(r["datname"] for r in rows)
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return names
    finally:
        await admin.close()


async def connection_headroom() -> int:
    """How many more connections the server takes now (max_connections minus those open)."""
    admin = await asyncpg.connect(f"{PG}/postgres")
    try:
        limit = int(await admin.fetchval("SHOW max_connections"))
        reserved = int(await admin.fetchval("SHOW superuser_reserved_connections"))
        used = int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
        return limit - reserved - used
    finally:
        await admin.close()


# Durability must be intact for the numbers to mean anything, and autovacuum on for them to last (infra/services.sh).
EXPECTED_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "autovacuum": "on"}


async def server_settings() -> dict[str, str]:
    """The PostgreSQL settings a result depends on, as the server reports them."""
    admin = await asyncpg.connect(f"{PG}/postgres")
    try:
        names = [*EXPECTED_SETTINGS, "max_connections", "shared_buffers", "max_wal_size", "wal_level", "server_version"]
        rows = await admin.fetch("SELECT name, setting, unit FROM pg_settings WHERE name = ANY ($1::text[])", names)
        return {r["name"]: r["setting"] + (f" x {r['unit']}" if r["unit"] else "") for r in rows}
    finally:
        await admin.close()


# --------------------------------------------------------------------------------------------------- shardpay CLI


def cli(env: dict[str, str], *argv: str, timeout: float = 300, ok_codes: tuple[int, ...] = (0,)) -> Any:
    """Run `shardpay ARGV` with the benchmark's environment and return its JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", "shardpay", *argv], env=env, capture_output=True, timeout=timeout, check=False
    )
    if done.returncode not in ok_codes:
        raise BenchError(f"shardpay {' '.join(argv)} exited {done.returncode}: {done.stderr.decode().strip()[-2000:]}")
    return orjson.loads(done.stdout) if done.stdout.strip() else None


# ------------------------------------------------------------------------------------------------------ seeding


@dataclass
class Seeded:
    merchant: str
    api_key: str
    wallets: list[str]  # index i lives on shard i % shards
    per_shard: list[int]
    balance: int
    total: int
    seconds: float


async def seed(settings: Settings, merchant: str, api_key: str, wallets: int, balance: int) -> Seeded:
    """``wallets`` USD wallets spread evenly over the shards, each funded with ``balance`` through the ledger.

    Straight into each shard with COPY: a wallet row (available = balance) and, per wallet, one ledger
    transaction of two entries (sys_funding_USD -balance, wallet +balance), so every rule of the audit holds.
    """
    started = time.monotonic()
    control = await asyncpg.connect(settings.control_dsn)
    try:
        slots = await SlotMap.load(control)
    finally:
        await control.close()
    shards = settings.shard_count
    owned = [slots.slots_of(shard) for shard in range(shards)]
    if any(not mine for mine in owned):
        raise BenchError("a shard owns no slot in slot_map: cannot place wallets on it")
    ids: list[str] = []
    by_shard: list[list[str]] = [[] for _ in range(shards)]
    for i in range(wallets):
        shard = i % shards
        mine = owned[shard]
        wallet = new_id("wal", mine[(i // shards) % len(mine)])
        ids.append(wallet)
        by_shard[shard].append(wallet)
    await asyncio.gather(
        *(_seed_shard(dsn, merchant, by_shard[n], balance) for n, dsn in enumerate(settings.shard_dsns))
    )
    return Seeded(
        merchant=merchant, api_key=api_key, wallets=ids, per_shard=[len(w) for w in by_shard], balance=balance,
        total=wallets * balance, seconds=time.monotonic() - started,
    )  # fmt: skip


async def _seed_shard(dsn: str, merchant: str, wallets: list[str], balance: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            txns = await conn.fetchval(
                "SELECT array_agg(nextval('ledger_txn_seq')) FROM generate_series(1, $1)", len(wallets)
            )
            await conn.copy_records_to_table(
                "accounts",
                records=[(w, merchant, "wallet", CURRENCY, balance) for w in wallets],
                columns=("id", "merchant_id", "kind", "currency", "available"),
            )
            funding = f"sys_funding_{CURRENCY}"
            entries: list[tuple[int, str, int, str, str, str, str]] = []
            for txn, wallet in zip(txns, wallets, strict=True):
                entries.append((txn, funding, -balance, CURRENCY, "adjustment", SEED_REF, "benchmark seed"))
                entries.append((txn, wallet, balance, CURRENCY, "adjustment", SEED_REF, "benchmark seed"))
            await conn.copy_records_to_table(
                "ledger_entries",
                records=entries,
                columns=("txn_id", "account_id", "amount", "currency", "kind", "ref", "memo"),
            )
        # As a shard that has been running looks: statistics, the visibility map and hint bits set. Without the
        # vacuum, autovacuum's first pass over the bulk-loaded rows lands inside the measured load.
        await conn.execute("VACUUM (ANALYZE) accounts")
        await conn.execute("VACUUM (ANALYZE) ledger_entries")
    finally:
        await conn.close()


# -------------------------------------------------------------------------------------------------- processes


@dataclass
class Stack:
    """The shardpay processes, each in its own process group (so stopping one stops its workers too)."""

    env: dict[str, str]
    logs: Path
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_dir: str = ""

    def start(self) -> None:
        self.metrics_dir = tempfile.mkdtemp(prefix="shardpay-bench-metrics-")
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
        self.logs.mkdir(parents=True, exist_ok=True)
        for name, argv in CHILDREN.items():
            with open(self.logs / f"{name}.log", "wb") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "shardpay", *argv],
                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip

    def dead(self) -> list[str]:
        return [f"{name} (exit {p.returncode})" for name, p in self.procs.items() if p.poll() is not None]

    def wait_ready(self, timeout: float) -> float:
        """Until the gateway's GET /readyz answers 200 (every shard, Redis and RabbitMQ reachable) and the PSP
        simulator's GET /sim/faults does (its database migrated, its faults loaded)."""
        started = time.monotonic()
        urls = [f"http://127.0.0.1:{self.port}/readyz", f"http://127.0.0.1:{psp_port(self.port)}/sim/faults"]
        while urls and time.monotonic() - started < timeout:
            if self.dead():
                raise BenchError(f"stack process died: {', '.join(self.dead())}; see {self.logs}")
            if _answers(urls[0]):
                urls.pop(0)
                continue
            time.sleep(0.25)
        if urls:
            raise BenchError(f"{urls[0]} did not answer 200 within {timeout:.0f} s; see {self.logs}")
        return time.monotonic() - started

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every group, wait, then SIGKILL what is left: no process of ours outlives the benchmark."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)  # the group: uvicorn workers too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.procs.clear()
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = ""


def _answers(url: str) -> bool:
    with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as reply:
        return bool(reply.status == 200)
    return False


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal every process of the group our child leads (start_new_session=True: its pid is the group id).

    While the leader is not reaped, or any member is alive, the kernel does not hand that id to anyone else,
    so these pids are ours; once the group is empty nothing is signalled.
    """
    import psutil

    members = [proc.pid] if proc.poll() is None else []
    for candidate in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if candidate != proc.pid and os.getpgid(candidate) == proc.pid:
                members.append(candidate)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
