"""The shardpay benchmark, one command: ``make bench ARGS="--scenario uniform --duration 30"``.

For each run it: drops and re-creates its own databases (``shardpay_bench_*``), migrates them, creates a merchant
with a very high rate limit, seeds 100,000 funded wallets over the shards straight through SQL, starts the gateway
(``--workers`` processes), relay, consumers and recovery on port 8300, drives POST /v1/transfers with wrk (Lua
scripts in loadtest/wrk/, one unique Idempotency-Key per request) for ``--duration`` seconds after a short
warm-up, samples every process's CPU, waits for cross-shard transfers to settle, runs ``shardpay audit``, checks
that the money in the system is exactly what was seeded and that no key moved money twice, stops the stack,
runs pgbench with the equivalent classic transaction on the same PostgreSQL, and writes
loadtest/results/<stamp>-<scenario>-<N>s-<C>c.json and .png. Exit status 0 only if every check passed.

``--all`` runs the matrix for the README (1, 2, 4 shards at 256 connections; 64..1,024 connections at 4 shards)
and writes a markdown table. ``--selftest`` needs no stack: wrk and the same Lua script against a null server
(loadtest/bench_null.py) show what the load generator alone drives from one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import secrets
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest import bench_load as load
from loadtest import bench_stack as stack
from shardpay.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = {
    # name: (wrk script, pgbench wallets (None: all), pgbench replay %)
    "uniform": ("uniform.lua", None, 0),
    "hot": ("hot.lua", 10, 0),
    "retry": ("retry.lua", None, 50),
}
HOT_WALLETS = 10
MAX_DURATION = 3600
PG_RESERVE = 100  # server connections pgbench leaves to everyone else on the machine


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
    env: tuple[tuple[str, str], ...]

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
    if not stack.port_free(cfg.port):
        raise stack.BenchError(f"127.0.0.1:{cfg.port} is in use: pick another --port")

    stack.say(f"{cfg.label}: fresh databases {cfg.db_prefix}_*, Redis db {stack.REDIS_DB}, vhost {stack.VHOST}")
    asyncio.run(stack.drop_databases(cfg.db_prefix))
    stack.reset_redis()
    stack.reset_vhost()
    stack.cli(env, "migrate", timeout=300)
    merchant = stack.cli(env, "merchants", "create", "--name", "bench", "--rate", "1000000", "--burst", "1000000")
    seeded = asyncio.run(stack.seed(settings, merchant["id"], merchant["api_key"], cfg.wallets, cfg.balance))
    stack.say(f"seeded {cfg.wallets:,} wallets ({seeded.per_shard}) with {seeded.total:,} in {seeded.seconds:.1f} s")
    result["seed"] = {k: v for k, v in asdict(seeded).items() if k not in ("wallets", "api_key")}

    work = Path(tempfile.mkdtemp(prefix="shardpay-bench-"))
    procs = stack.Stack(env=env, logs=logs, port=cfg.port)
    try:
        ids_file = _ids_file(work, cfg.scenario, seeded.wallets)
        procs.start()
        ready = procs.wait_ready(90)
        stack.say(f"stack ready in {ready:.1f} s (gateway {url}, {cfg.workers} workers); logs in {logs}")
        result["load"] = _drive(cfg, wrk, url, ids_file, seeded, procs, stamp)
        dead = procs.dead()
        result["checks"]["stack_alive"] = not dead
        if dead:
            stack.say(f"processes died during the load: {dead}")
        stack.say("waiting for cross-shard transfers to settle")
        result["settle"] = asyncio.run(stack.settle(settings, cfg.settle_timeout))
        result["checks"]["settled"] = result["settle"]["settled"]
        stack.say("shardpay audit")
        audit = stack.cli(env, "audit", timeout=600, ok_codes=(0, 1))
        result["audit"] = {
            "ok": bool(audit.get("ok")), "violation_counts": audit.get("violation_counts"),
            "violations": audit.get("violations", [])[:20], "checked": audit.get("checked"),
            "totals": audit.get("totals"),
        }  # fmt: skip
        result["checks"]["audit"] = result["audit"]["ok"]
        state = asyncio.run(stack.ledger_state(settings, seeded.merchant))
        result["ledger"] = state
        result["money"] = stack.money_check(seeded.total, state)
        result["checks"]["money"] = result["money"]["ok"]
        result["effects"] = _effects(result["load"], state)
        result["checks"]["one_effect_per_key"] = result["effects"]["ok"]
        warm = (result["load"]["warmup"] or {}).get("statuses", {})
        for code in ("500", "422"):  # a 500 is always a bug; a replay with the same body is never a 422
            seen = result["load"]["statuses"].get(code, 0) + warm.get(code, 0)
            result["checks"][f"no_{code}"] = seen == 0
    finally:
        stack.say("stopping the stack")
        procs.stop()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()

    if cfg.pgbench:
        result["pgbench"] = _pgbench(cfg, pgbench_cache)
        ok_rps = result["load"]["ok_per_s"]
        result["ratio"] = round(ok_rps / result["pgbench"]["tps"], 4) if result["pgbench"].get("tps") else None
    result["pass"] = all(result["checks"].values())
    json_path = Path(f"{base}.json")
    png_path = Path(f"{base}.png")
    result["files"] = {"json": _rel(json_path), "png": _rel(png_path), "logs": _rel(logs)}
    _plot(result, png_path)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(summary(result), flush=True)
    return result


def _ids_file(work: Path, scenario: str, wallets: list[str]) -> Path:
    """The wallet ids the Lua script draws from: all of them, or for `hot` 10 spread over the shards."""
    chosen = wallets[:HOT_WALLETS] if scenario == "hot" else random.sample(wallets, len(wallets))
    path = work / f"ids-{scenario}.txt"
    path.write_text("\n".join(chosen) + "\n")
    return path


def _drive(
    cfg: Config, wrk: str, url: str, ids_file: Path, seeded: stack.Seeded, procs: stack.Stack, stamp: str
) -> dict[str, Any]:
    """An unmeasured warm-up, then one wrk run of ``duration`` seconds with the CPU sampler running."""
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
            connections=cfg.connections, seconds=seconds, timeout=cfg.wrk_timeout,
        )  # fmt: skip

    warm = None
    if cfg.warmup:
        stack.say(f"warm-up {cfg.warmup} s (not measured)")
        warm = wrk_run(f"{prefix}-w", cfg.warmup)
    stack.say(f"load: {cfg.scenario}, {cfg.connections} connections, {cfg.duration} s")
    sampler = load.CpuSampler(ours=ours, db_prefix=cfg.db_prefix)
    sampler.start()
    try:
        main = wrk_run(f"{prefix}-m", cfg.duration)
    finally:
        cpu = sampler.stop()
    return _aggregate(main, warm, cpu)


def _aggregate(run: load.WrkRun, warm: load.WrkRun | None, cpu: dict[str, Any]) -> dict[str, Any]:
    report = run.report
    socket_errors = {kind: n for kind, n in report["errors"].items() if kind != "status"}
    wrk_cpu = cpu.get("wrk_cpu_s") or 0.0
    per_request_us = 1e6 * wrk_cpu / run.requests if run.requests and wrk_cpu else None
    return {
        "seconds": round(run.seconds, 3), "wall_s": round(run.wall, 2), "requests": run.requests,
        "rps": round(run.requests / run.seconds, 1) if run.seconds else 0.0, "ok": run.ok(),
        "ok_per_s": round(run.ok() / run.seconds, 1) if run.seconds else 0.0, "latency_ms": run.latency_ms(),
        "statuses": dict(sorted(report["statuses"].items())), "socket_errors": socket_errors,
        "replayed": report["replayed"], "sent": report["sent"], "replays_sent": report["replays_sent"],
        # request() runs once more than wrk sends (wrk checks the first request), hence the -1.
        "unanswered": max(0, report["sent"] - 1 - run.requests), "no_request_id_echo": report["unmatched"],
        "warmup": None if warm is None else {
            "requests": warm.requests, "statuses": warm.report["statuses"], "replayed": warm.report["replayed"],
            "unanswered": max(0, warm.report["sent"] - 1 - warm.requests),
            "socket_errors": sum(n for kind, n in warm.report["errors"].items() if kind != "status"),
        },
        "timeline": run.timeline(), "cpu": cpu,
        "wrk_cpu_per_request_us": round(per_request_us, 2) if per_request_us else None,
    }  # fmt: skip


def _effects(loaded: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """No key moved money twice, and every fresh (not replayed) 201 is exactly one transfer in the database.

    The transfers in the database must be at least the fresh 201s and at most those plus the requests whose
    outcome the client never learnt (unanswered when wrk stopped, socket errors, 5xx).
    """
    transfers = state["transfers"]

    def fresh_and_unknown(part: dict[str, Any]) -> tuple[int, int]:
        statuses = part["statuses"]
        fresh = statuses.get("201", 0) - part["replayed"].get("201", 0)
        errors = part["socket_errors"]
        unknown = part["unanswered"] + (sum(errors.values()) if isinstance(errors, dict) else errors)
        unknown += sum(n for code, n in statuses.items() if code.startswith("5"))
        return fresh, unknown

    fresh, unknown = fresh_and_unknown(loaded)
    if loaded["warmup"]:
        warm_fresh, warm_unknown = fresh_and_unknown(loaded["warmup"])
        fresh, unknown = fresh + warm_fresh, unknown + warm_unknown
    rows = transfers["rows"]
    ok = transfers["duplicated_keys"] == 0 and fresh <= rows <= fresh + unknown
    return {
        "ok": ok, "transfers": rows, "duplicated_keys": transfers["duplicated_keys"], "fresh_201": fresh,
        "unknown_outcome": unknown, "by_status": transfers["by_status"], "cross_shard": transfers["cross_shard"],
    }  # fmt: skip


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


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


# ------------------------------------------------------------------------------------------------------ output


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    timeline = result["load"]["timeline"]
    t = [p["t"] for p in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    top.plot(t, [p["rps"] for p in timeline], "o-", markersize=3, label="all responses")
    top.plot(t, [p["ok_rps"] for p in timeline], "s--", markersize=3, label="2xx")
    pg = result.get("pgbench") or {}
    if pg.get("tps"):
        top.axhline(pg["tps"], color="grey", linestyle=":", label=f"pgbench {pg['tps']:,.0f} tps")
    top.set_ylabel("throughput (req/s)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)
    bottom.plot(t, [p["p50_ms"] for p in timeline], "o-", markersize=3, label="p50")
    bottom.plot(t, [p["p99_ms"] for p in timeline], "s-", markersize=3, label="p99", color="tab:red")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds into the measured load (one point per second, from wrk)")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="best", fontsize=8)
    lat = result["load"]["latency_ms"]
    fig.suptitle(
        f"shardpay {cfg['scenario']}: {cfg['shards']} shards, {cfg['connections']} connections, "
        f"{cfg['workers']} gateway workers, {cfg['duration']} s — {result['load']['rps']:,.0f} req/s, "
        f"p99 {lat['p99']:.1f} ms — {'PASS' if result['pass'] else 'FAIL'}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(result: dict[str, Any]) -> str:
    cfg = result["config"]
    loaded = result["load"]
    lat = loaded["latency_ms"]
    lines = [
        "",
        f"shardpay bench — {cfg['scenario']}: {cfg['shards']} shards, {cfg['connections']} connections, "
        f"{cfg['workers']} gateway workers, {cfg['duration']} s of wrk "
        f"({cfg['threads']} wrk thread{'s' if cfg['threads'] > 1 else ''}), {cfg['wallets']:,} wallets",
        f"  throughput  {loaded['rps']:>10,.0f} req/s   2xx {loaded['ok_per_s']:,.0f}/s   "
        f"{loaded['requests']:,} responses in {loaded['seconds']:.1f} s",
        "  latency ms  " + "  ".join(f"{k} {lat[k]:,.1f}" for k in ("p50", "p95", "p99", "p99.9", "max")),
        "  statuses    " + "  ".join(f"{code}: {n:,}" for code, n in loaded["statuses"].items())
        + (f"   (replayed: {sum(loaded['replayed'].values()):,})" if loaded["replayed"] else "")
        + "   socket errors: " + (", ".join(f"{k} {v}" for k, v in loaded["socket_errors"].items() if v) or "0"),
    ]  # fmt: skip
    if "settle" in result:
        s = result["settle"]
        lines.append(
            f"  settle      {s['in_flight_at_end_of_load']} sagas in flight at the end, {s['in_flight']} after "
            f"{s['seconds']} s  {_mark(s['settled'])}"
        )
    if "effects" in result:
        e = result["effects"]
        lines.append(
            f"  effects     {e['transfers']:,} transfers ({e['cross_shard']:,} cross-shard) for {e['fresh_201']:,} "
            f"fresh 201s (+{e['unknown_outcome']:,} requests of unknown outcome); "
            f"{e['duplicated_keys']} keys moved money twice  {_mark(e['ok'])}"
        )
    if "audit" in result:
        a = result["audit"]
        detail = "ok" if a["ok"] else f"violations {a['violation_counts']}"
        lines.append(f"  audit       shardpay audit: {detail}  {_mark(a['ok'])}")
    if "money" in result:
        m = result["money"]
        lines.append(
            f"  money       seeded {m['seeded']:,} = wallets {m['wallets']:,} + in flight {m['in_flight']:,} "
            f"(difference {m['difference']:,})  {_mark(m['ok'])}"
        )
    pg = result.get("pgbench")
    if pg:
        if pg.get("tps"):
            lines.append(
                f"  pgbench     {pg['tps']:,.0f} tps ({pg['clients']} clients, {pg['seconds']} s, p99 "
                f"{pg['latency_ms']['p99']:.1f} ms)   ratio shardpay 2xx/s ÷ pgbench tps = {result['ratio']:.3f}"
                + (f"  [{pg['note']}]" if pg.get("note") else "")
            )
        else:
            lines.append(f"  pgbench     failed: {pg.get('error')}")
    cpu = loaded["cpu"]
    lines.append(
        f"  CPU         {cpu['cpus']} cores over {cpu['wall_s']} s of load: {cpu['busy_pct']}% busy "
        f"(share = % of all cores; cores = CPU-seconds per second)"
    )
    lines.append(f"    {'process':<42} {'pids':>4} {'cpu s':>8} {'cores':>6} {'share':>7}")
    for row in cpu["processes"]:
        lines.append(
            f"    {row['process']:<42} {row['pids']:>4} {row['cpu_s']:>8.2f} {row['cores']:>6.2f} "
            f"{row['share_pct']:>6.1f}%"
        )
    if loaded.get("wrk_cpu_per_request_us"):
        lines.append(
            f"  wrk         {loaded['wrk_cpu_per_request_us']:.1f} µs CPU per request at this rate "
            f"({cpu['wrk_cpu_s']:.2f} CPU s; the generator's own ceiling: --selftest)"
        )
    lines.append(f"  files       {result['files']['json']}  {result['files']['png']}")
    failed = [name for name, ok in result["checks"].items() if not ok]
    lines.append(f"RESULT {_mark(result['pass'])}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    return "\n".join(lines)


def matrix_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| scenario | shards | connections | workers | req/s | 2xx/s | p50 ms | p99 ms | p99.9 ms | non-2xx | "
        "pgbench tps | ratio | checks |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "error" in r:
            out.append(
                f"| {r['scenario']} | {r['shards']} | {r['connections']} | | | | | | | | | | error: {r['error']} |"
            )
            continue
        cfg, loaded = r["config"], r["load"]
        lat = loaded["latency_ms"]
        non2xx = loaded["requests"] - loaded["ok"] + sum(loaded["socket_errors"].values())
        pg = (r.get("pgbench") or {}).get("tps")
        ratio = f"{r['ratio']:.3f}" if r.get("ratio") is not None else "-"
        out.append(
            f"| {cfg['scenario']} | {cfg['shards']} | {cfg['connections']} | {cfg['workers']} | {loaded['rps']:,.0f} | "
            f"{loaded['ok_per_s']:,.0f} | {lat['p50']:.1f} | {lat['p99']:.1f} | {lat['p99.9']:.1f} | {non2xx:,} | "
            f"{f'{pg:,.0f}' if pg else '-'} | {ratio} | "
            f"{_mark(r['pass'])} |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="uniform")
    p.add_argument("--shards", type=int, default=4, help="shard databases (default 4)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--duration", type=int, default=30, help=f"seconds of measured load, 1..{MAX_DURATION} (default 30)")
    p.add_argument("--workers", type=int, default=2, help="gateway processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: one core of load)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured seconds of load first (default 2)")
    p.add_argument("--wallets", type=int, default=100_000)
    p.add_argument("--balance", type=int, default=100_000, help="each wallet's seeded balance in cents")
    p.add_argument("--port", type=int, default=8300)
    p.add_argument("--db-prefix", default="shardpay_bench", help="must contain 'bench' (its databases are dropped)")
    p.add_argument("--no-pgbench", action="store_true", help="skip the pgbench baseline")
    p.add_argument("--settle-timeout", type=int, default=90, help="seconds to wait for sagas in flight")
    p.add_argument("--wrk-timeout", type=int, default=15, help="wrk's per-request timeout (s)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="extra SHARDPAY_NAME=VALUE for the stack, e.g. --set POOL_MAX=16 (repeatable)")  # fmt: skip
    p.add_argument("--all", action="store_true",
                   help="the README matrix: --all-shards at 256 conns, --all-connections at 4 shards")  # fmt: skip
    p.add_argument("--all-shards", default="1,2,4")
    p.add_argument("--all-connections", default="64,128,256,512,1024")
    p.add_argument("--selftest", action="store_true",
                   help="no stack: wrk + the Lua script against a null server (the generator's ceiling)")  # fmt: skip
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
        scenario=values["scenario"], shards=values["shards"], connections=values["connections"], duration=duration,
        workers=values["workers"], threads=values["threads"], warmup=values["warmup"],
        wallets=values["wallets"], balance=values["balance"], port=values["port"], db_prefix=values["db_prefix"],
        pgbench=not values["no_pgbench"], settle_timeout=values["settle_timeout"], wrk_timeout=values["wrk_timeout"],
        env=tuple(env),
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
            return selftest(min(args.duration, 10), args.connections, args.threads)
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


def selftest(seconds: int, connections: int, threads: int) -> int:
    """wrk with the real Lua script against a null gateway (loadtest/bench_null.py): the generator's own ceiling."""
    import resource
    import socket
    import subprocess
    import time

    wrk = stack.ensure_wrk()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="shardpay-bench-selftest-"))
    ids_file = _ids_file(work, "uniform", [f"wal_{i % 4096:04x}{secrets.token_hex(10)}" for i in range(100_000)])
    server = subprocess.Popen(
        [sys.executable, "-m", "loadtest.bench_null", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.1)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        one = load.run_wrk(
            wrk, f"http://127.0.0.1:{port}", load.WRK_DIR / "uniform.lua", ids_file, "selftest", "sk_selftest",
            threads=threads, connections=connections, seconds=seconds, timeout=5,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    rps = one.requests / one.seconds
    per_request = 1e6 * cpu / one.requests if one.requests else 0.0
    print(
        f"wrk self-test (null gateway, {connections} connections, {threads} wrk thread(s), {seconds} s, "
        f"the real transfer Lua script): {rps:,.0f} req/s; wrk used {cpu / one.wall:.2f} cores, "
        f"{per_request:.1f} µs CPU per request -> one core drives ~{1e6 / per_request if per_request else 0:,.0f} req/s"
    )
    ok = rps >= 15_000
    print(f"RESULT {'PASS' if ok else 'FAIL'} (15,000 req/s from one core: {'yes' if ok else 'no'})")
    return 0 if ok else 1


def _matrix(args: argparse.Namespace) -> int:
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
    table = matrix_table(rows)
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
