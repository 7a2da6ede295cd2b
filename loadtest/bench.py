"""The shardpay benchmark, one command: ``make bench ARGS="--scenario uniform --duration 30"``.

For each run it: drops and re-creates its own databases (``shardpay_bench_*``), migrates them, creates a merchant
with a very high rate limit, seeds 100,000 funded wallets over the shards straight through SQL, starts the gateway
(``--workers`` processes), relay, consumers, recovery, the PSP executor and the bench's own PSP simulator on port
8300 (the simulator on 8400), drives POST /v1/transfers with wrk (Lua scripts in loadtest/wrk/, one unique
Idempotency-Key per request) for ``--duration`` seconds after a short warm-up, samples every process's CPU, waits
for cross-shard transfers to settle, runs ``shardpay audit``, checks that the money in the system is exactly what
was seeded and that no key moved money twice, stops the stack, runs pgbench with the equivalent classic
transaction on the same PostgreSQL, and writes loadtest/results/<stamp>-<scenario>-<N>s-<C>c.json and .png. Exit
status 0 only if every check passed.

``--scenario payments`` drives POST /v1/payments instead (one order each, through the simulator with 5 ms of
latency and no fault; loadtest/bench_payments.py), measures payments end to end from the databases' timestamps,
keeps the CPU sampler running until the last order is final, and has no pgbench baseline.

``--all`` runs the matrix for the README (1, 2, 4 shards at 256 connections; 64..1,024 connections at 4 shards)
and writes a markdown table. ``--selftest`` needs no stack: wrk and the same Lua script against a null server
(loadtest/bench_null.py) show what the load generator alone drives from one core; ``--ceiling`` does the same
against uvicorn + Starlette + orjson answering a trivial POST (loadtest/bench_trivial.py): what the HTTP layer
alone costs on this machine, the ceiling under any gateway built on that stack.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest import bench_after as after
from loadtest import bench_capacity as capacity
from loadtest import bench_load as load
from loadtest import bench_payments as payments
from loadtest import bench_report as report
from loadtest import bench_selftest
from loadtest import bench_stack as stack
from shardpay.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = {
    # name: (wrk script, pgbench wallets (None: all), pgbench replay %)
    "uniform": ("uniform.lua", None, 0),
    "hot": ("hot.lua", 10, 0),
    "retry": ("retry.lua", None, 50),
    "payments": ("payments.lua", None, 0),
    "bulk": ("bulk.lua", None, 0),
}
# pgbench's classic transaction is a transfer: nothing in it compares with a pay-in through a PSP.
NO_PGBENCH = {"payments"}
HOT_WALLETS = 10
MAX_DURATION = 3600
MEMORY_MIN_DURATION = 60  # seconds of load before each gateway worker's memory must be flat (within 10 %)
PG_RESERVE = 100  # server connections pgbench leaves to everyone else on the machine
CEILING_SECONDS = 10
CEILING_CONNECTIONS = 256  # whatever the run's own count: a few connections would understate what HTTP can do
BULK_CONNECTIONS = 8  # 8 batches of 100 in flight keep a batch's p99 under 500 ms here (64: 2.6 s, no faster)


@dataclass(frozen=True)
class Config:
    scenario: str
    shards: int
    connections: int
    duration: int
    workers: int
    threads: int
    warmup: int
    wallets: int
    balance: int
    port: int
    db_prefix: str
    pgbench: bool
    settle_timeout: int
    wrk_timeout: int
    rate: int
    env: tuple[tuple[str, str], ...]
    batch: int = 100
    ceiling: bool = True
    capacity: bool = False

    @property
    def label(self) -> str:
        return f"{self.scenario}-{self.shards}s-{self.connections}c"


class Interrupted(Exception):
    """SIGTERM: unwind through every finally (processes stopped) like Ctrl-C does."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted()


# ------------------------------------------------------------------------------------------------------ one run


def run(cfg: Config, pgbench_cache: dict[tuple[str, int, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One benchmark run, from empty databases to the results files. Stops everything it started."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"{stamp}-{cfg.label}"
    logs = Path(f"{base}-logs")
    env = stack.stack_env(cfg.db_prefix, cfg.shards, cfg.port, cfg.workers, dict(cfg.env))
    settings = Settings.from_env(env)
    url = f"http://127.0.0.1:{cfg.port}"
    result: dict[str, Any] = {"config": asdict(cfg) | {"env": dict(cfg.env)}, "started": stamp, "checks": {}}
    wrk = stack.ensure_wrk()
    stack.check_services()
    for port, what in ((cfg.port, "the gateway"), (stack.psp_port(cfg.port), "the PSP simulator (--port + 100)")):
        if not stack.port_free(port):
            raise stack.BenchError(f"127.0.0.1:{port} ({what}) is in use: pick another --port")

    result["postgres"] = asyncio.run(stack.server_settings())
    wrong = {k: result["postgres"].get(k) for k, v in stack.EXPECTED_SETTINGS.items() if result["postgres"].get(k) != v}
    result["checks"]["postgres_settings"] = not wrong
    if wrong:
        stack.say(f"PostgreSQL settings {wrong} differ from {stack.EXPECTED_SETTINGS}: `make services` sets them")
    stack.say(f"{cfg.label}: fresh databases {cfg.db_prefix}_*, Redis db {stack.REDIS_DB}, vhost {stack.VHOST}")
    asyncio.run(stack.drop_databases(cfg.db_prefix))
    stack.reset_redis()
    stack.reset_vhost()
    stack.cli(env, "migrate", timeout=300)
    merchant = stack.cli(env, "merchants", "create", "--name", "bench", "--rate", "1000000", "--burst", "1000000")
    seeded = asyncio.run(stack.seed(settings, merchant["id"], merchant["api_key"], cfg.wallets, cfg.balance))
    stack.say(f"seeded {cfg.wallets:,} wallets ({seeded.per_shard}) with {seeded.total:,} in {seeded.seconds:.1f} s")
    result["seed"] = {k: v for k, v in asdict(seeded).items() if k not in ("wallets", "api_key")}

    if cfg.ceiling:  # the HTTP layer's ceiling now, to divide this run's rate by (the host's speed swings)
        stack.say(
            f"HTTP ceiling: a trivial POST, {cfg.workers} workers, {CEILING_CONNECTIONS} connections, "
            f"{CEILING_SECONDS} s (same run)"
        )
        result["ceiling"] = bench_selftest.measure_ceiling(CEILING_SECONDS, CEILING_CONNECTIONS, 1, cfg.workers)
    work = Path(tempfile.mkdtemp(prefix="shardpay-bench-"))
    procs = stack.Stack(env=env, logs=logs, port=cfg.port)
    try:
        ids_file = load.ids_file(work, cfg.scenario, seeded.wallets, HOT_WALLETS)
        procs.start()
        ready = procs.wait_ready(90)
        stack.say(f"stack ready in {ready:.1f} s (gateway {url}, {cfg.workers} workers); logs in {logs}")
        extra: tuple[str, ...] = ()
        drain: Callable[[], dict[str, Any]] | None = None
        if cfg.scenario == "payments":
            extra, drain = payments.setup(result, url, settings, seeded, work, cfg.settle_timeout)
        result["load"] = _drive(cfg, wrk, url, ids_file, seeded, procs, stamp, extra, drain)
        dead = procs.dead()
        result["checks"]["stack_alive"] = not dead
        if dead:
            stack.say(f"processes died during the load: {dead}")
        if cfg.scenario == "payments":
            payments.after(result, settings, seeded)
        else:
            after.transfers(result, settings, seeded, cfg.settle_timeout)
        stack.say("shardpay audit")
        audit = stack.cli(env, "audit", timeout=600, ok_codes=(0, 1))
        result["audit"] = {
            "ok": bool(audit.get("ok")), "violation_counts": audit.get("violation_counts"),
            "violations": audit.get("violations", [])[:20], "checked": audit.get("checked"),
            "totals": audit.get("totals"),
        }  # fmt: skip
        result["checks"]["audit"] = result["audit"]["ok"]
        if cfg.duration >= MEMORY_MIN_DURATION:  # shorter runs are still warming up their allocators and pools
            memory = [row for row in result["load"]["cpu"]["memory"] if row["process"].startswith("gateway worker")]
            result["checks"]["gateway_memory_flat"] = bool(memory) and all(row["flat"] for row in memory)
    finally:
        stack.say("stopping the stack")
        procs.stop()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()

    if cfg.pgbench and cfg.scenario not in NO_PGBENCH:
        result["pgbench"] = _pgbench(cfg, pgbench_cache)
        ok_rps = result["load"]["transfers_per_s"]
        result["ratio"] = round(ok_rps / result["pgbench"]["tps"], 4) if result["pgbench"].get("tps") else None
    _headline(cfg, result)
    result["pass"] = all(result["checks"].values())
    json_path = Path(f"{base}.json")
    png_path = Path(f"{base}.png")
    result["files"] = {"json": report.rel(json_path), "png": report.rel(png_path), "logs": report.rel(logs)}
    report.plot(result, png_path)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(report.summary(result), flush=True)
    return result


def _headline(cfg: Config, result: dict[str, Any]) -> None:
    """CPU per transfer by layer, the rate over the ceiling measured in this run, and with --capacity the plan."""
    if cfg.scenario == "payments":
        return  # its own CPU per payment (bench_payments_report)
    loaded = result["load"]
    head = capacity.headline(loaded["cpu"], loaded["transfers"])
    if head is None:
        return
    result["headline"] = head
    if result.get("ceiling", {}).get("rps"):
        result["ceiling_ratio"] = round(loaded["transfers_per_s"] / result["ceiling"]["rps"], 4)
    if cfg.capacity:
        result["capacity"] = capacity.plan(head, cfg.shards)


def _drive(
    cfg: Config, wrk: str, url: str, ids_file: Path, seeded: stack.Seeded, procs: stack.Stack, stamp: str,
    extra: tuple[str, ...], drain: Callable[[], dict[str, Any]] | None,
) -> dict[str, Any]:  # fmt: skip
    """An unmeasured warm-up, then one wrk run of ``duration`` seconds with the CPU sampler running; the measured
    window's wall-clock bounds go with the result (the payments scenario counts finals inside them).

    ``drain`` (payments): run after the warm-up, so that its work is done before the measured load starts, and
    after the load with the sampler still running, so that the CPU table holds every measured payment's whole
    cost, the charges the executor finishes after wrk stopped included."""
    script = load.WRK_DIR / SCENARIOS[cfg.scenario][0]
    prefix = f"b{stamp}-{secrets.token_hex(3)}"

    def ours() -> dict[int, str]:
        pids = procs.pids()
        labels = {pids.pop("gateway"): "gateway (uvicorn master)"} if "gateway" in pids else {}
        labels.update({pid: name for name, pid in pids.items()})
        labels[os.getpid()] = "bench harness (this process)"
        return labels

    def wrk_run(key_prefix: str, seconds: int) -> load.WrkRun:
        return load.run_wrk(
            wrk, url, script, ids_file, key_prefix, seeded.api_key, threads=cfg.threads,
            connections=cfg.connections, seconds=seconds, timeout=cfg.wrk_timeout, extra=extra,
            delay_ms=load.delay_ms(cfg.connections, cfg.rate), batch=cfg.batch,
        )  # fmt: skip

    warm = None
    if cfg.warmup:
        stack.say(f"warm-up {cfg.warmup} s (not measured)")
        warm = wrk_run(f"{prefix}-w", cfg.warmup)
        if drain:
            stack.say(f"warm-up drained: {drain()}")
    stack.say(f"load: {cfg.scenario}, {cfg.connections} connections, {cfg.duration} s")
    sampler = load.CpuSampler(ours=ours, db_prefix=cfg.db_prefix)
    sampler.start()
    started = time.time()
    drained = None
    try:
        main = wrk_run(f"{prefix}-m", cfg.duration)
        window = [started, time.time()]
        if drain:
            stack.say("load done; the CPU sampler runs on until every payment order is final")
            drained = drain()
    finally:
        cpu = sampler.stop()
    return report.aggregate(main, warm, cpu) | {"window": window, "drain": drained}


def _pgbench(cfg: Config, cache: dict[tuple[str, int, int], dict[str, Any]] | None) -> dict[str, Any]:
    _, hot, replay = SCENARIOS[cfg.scenario]
    key = (cfg.scenario, cfg.connections, cfg.duration)
    if cache is not None and key in cache:
        return cache[key]
    headroom = asyncio.run(stack.connection_headroom()) - PG_RESERVE
    clients = max(1, min(cfg.connections, headroom))
    stack.say(f"pgbench: {clients} clients, {cfg.duration} s, {cfg.scenario} (same PostgreSQL, stack stopped)")
    try:
        bench = load.run_pgbench(
            clients=clients, seconds=cfg.duration, wallets=hot or cfg.wallets, balance=cfg.balance, replay_pct=replay
        )
        if clients < cfg.connections:
            bench["note"] = f"clients capped at {clients} by max_connections (asked {cfg.connections})"
    except (RuntimeError, OSError) as exc:
        bench = {"error": str(exc)[-1000:], "tps": None}
    if cache is not None:
        cache[key] = bench
    return bench


# --------------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="uniform")
    p.add_argument("--shards", type=int, default=4, help="shard databases (default 4)")
    p.add_argument("--connections", type=int, default=None,
                   help=f"wrk connections (default 64; bulk: {BULK_CONNECTIONS} batches at once)")  # fmt: skip
    p.add_argument("--duration", type=int, default=30, help=f"seconds of measured load, 1..{MAX_DURATION} (default 30)")
    p.add_argument("--workers", type=int, default=1, help="gateway processes (default 1, as SHARDPAY_WORKERS)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: one core of load)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured seconds of load first (default 2)")
    p.add_argument("--wallets", type=int, default=100_000)
    p.add_argument("--balance", type=int, default=100_000, help="each wallet's seeded balance in cents")
    p.add_argument("--port", type=int, default=8300)
    p.add_argument("--db-prefix", default="shardpay_bench", help="must contain 'bench' (its databases are dropped)")
    p.add_argument("--no-pgbench", action="store_true", help="skip the pgbench baseline")
    p.add_argument("--no-ceiling", action="store_true",
                   help=f"skip the HTTP ceiling measured before the stack starts ({CEILING_SECONDS} s)")  # fmt: skip
    p.add_argument("--batch", type=int, default=100, help="bulk: transfers per batch, 1..1000 (default 100)")
    p.add_argument("--capacity", action="store_true",
                   help="also print the capacity plan: each tier's cores at 10,000 and 100,000/s")  # fmt: skip
    p.add_argument("--settle-timeout", type=int, default=90,
                   help="seconds to wait for sagas in flight; payments: seconds without any order becoming final "
                        "before giving up on the rest")  # fmt: skip
    p.add_argument("--rate", type=int, default=0,
                   help="requests per second at most, through wrk's delay() (each connection waits connections/rate "
                        "s, ±50%%, between requests); 0 (default): as fast as the answers come")  # fmt: skip
    p.add_argument("--wrk-timeout", type=int, default=15, help="wrk's per-request timeout (s)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="extra SHARDPAY_NAME=VALUE for the stack, e.g. --set POOL_MAX=16 (repeatable)")  # fmt: skip
    p.add_argument("--all", action="store_true",
                   help="the README matrix: --all-shards at 256 conns, --all-connections at 4 shards")  # fmt: skip
    p.add_argument("--all-shards", default="1,2,4")
    p.add_argument("--all-connections", default="64,128,256,512,1024")
    p.add_argument("--selftest", action="store_true",
                   help="no stack: wrk + the Lua script against a null server (the generator's ceiling)")  # fmt: skip
    p.add_argument("--ceiling", action="store_true",
                   help="no stack: wrk against uvicorn + Starlette + orjson answering a trivial POST, --workers "
                        "processes (the HTTP layer's ceiling)")  # fmt: skip
    return p


def _config(args: argparse.Namespace, **override: Any) -> Config:
    values = vars(args) | override
    duration = values["duration"]
    env: list[tuple[str, str]] = []
    for item in values["set"]:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set wants NAME=VALUE, got {item!r}")
        env.append((name.removeprefix("SHARDPAY_").upper(), value))
    return Config(
        scenario=values["scenario"], shards=values["shards"], duration=duration,
        connections=values["connections"] or (BULK_CONNECTIONS if values["scenario"] == "bulk" else 64),
        workers=values["workers"], threads=values["threads"], warmup=values["warmup"],
        wallets=values["wallets"], balance=values["balance"], port=values["port"], db_prefix=values["db_prefix"],
        pgbench=not values["no_pgbench"], settle_timeout=values["settle_timeout"], wrk_timeout=values["wrk_timeout"],
        rate=values["rate"],
        env=tuple(env), batch=values["batch"], ceiling=not values["no_ceiling"], capacity=values["capacity"],
    )  # fmt: skip


def _check(cfg: Config) -> None:
    problems = []
    if not 1 <= cfg.duration <= MAX_DURATION:
        problems.append(f"--duration must be 1..{MAX_DURATION}")
    if not 1 <= cfg.shards <= 64:
        problems.append("--shards must be 1..64")
    if not 1 <= cfg.workers <= 16:
        problems.append("--workers must be 1..16")
    if cfg.threads < 1 or cfg.connections < cfg.threads or cfg.connections % cfg.threads:
        problems.append("--connections must be a multiple of --threads (wrk gives each thread the same share)")
    if cfg.wallets < max(2, HOT_WALLETS if cfg.scenario == "hot" else 2) or cfg.balance < 100:
        problems.append("--wallets must be >= 10 and --balance >= 100")
    if not 1 <= cfg.batch <= 1000:
        problems.append("--batch must be 1..1000")
    if cfg.rate < 0:
        problems.append("--rate must be >= 0")
    if "bench" not in cfg.db_prefix or not cfg.db_prefix.replace("_", "").isalnum():
        problems.append("--db-prefix must be letters, digits and _ and contain 'bench' (its databases are dropped)")
    if problems:
        raise SystemExit("; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background (SIG_IGN)
    try:
        if args.selftest:
            return bench_selftest.selftest(min(args.duration, 10), args.connections, args.threads)
        if args.ceiling:
            return bench_selftest.ceiling(min(args.duration, 30), args.connections, args.threads, args.workers)
        if not args.all:
            cfg = _config(args)
            _check(cfg)
            return 0 if run(cfg)["pass"] else 1
        return _matrix(args)
    except (KeyboardInterrupt, Interrupted):
        stack.say("interrupted: everything the benchmark started has been stopped")
        return 130
    except (stack.BenchError, RuntimeError, OSError) as exc:
        stack.say(f"error: {exc}")
        return 2


def _matrix(args: argparse.Namespace) -> int:
    if args.scenario in NO_PGBENCH:
        # The matrix is transfers against pgbench; payments are measured on their own (the README says why).
        raise SystemExit(f"--all runs the transfer matrix; run --scenario {args.scenario} without --all")
    shards_list = [int(x) for x in args.all_shards.split(",") if x.strip()]
    conns_list = [int(x) for x in args.all_connections.split(",") if x.strip()]
    cells = [(s, 256) for s in shards_list]
    cells += [(4, c) for c in conns_list if (4, c) not in cells]
    configs = [_config(args, shards=s, connections=c) for s, c in cells]
    for cfg in configs:
        _check(cfg)
    per_cell = args.duration + args.warmup + 45 + args.duration * bool(not args.no_pgbench)
    stack.say(f"--all: {len(configs)} runs of {args.duration} s; about {len(configs) * per_cell / 60:.0f} min in all")
    rows: list[dict[str, Any]] = []
    cache: dict[tuple[str, int, int], dict[str, Any]] = {}
    for cfg in configs:
        try:
            rows.append(run(cfg, cache))
        except (stack.BenchError, RuntimeError) as exc:
            stack.say(f"{cfg.label}: {exc}")
            rows.append({"scenario": cfg.scenario, "shards": cfg.shards, "connections": cfg.connections,
                         "error": str(exc)[:200], "pass": False})  # fmt: skip
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    table = report.matrix_table(rows)
    (RESULTS / f"{stamp}-matrix-{args.scenario}.md").write_text(table + "\n")
    slim = [{k: v for k, v in r.items() if k not in ("ledger",)} for r in rows]
    (RESULTS / f"{stamp}-matrix-{args.scenario}.json").write_bytes(
        orjson.dumps(slim, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    print("\n" + table)
    print(f"\nmatrix: loadtest/results/{stamp}-matrix-{args.scenario}.md (.json)")
    return 0 if all(r.get("pass") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
