"""Load and measurement for loadtest/bench.py: wrk slices, latency histograms, per-process CPU, pgbench."""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

HERE = Path(__file__).resolve().parent
WRK_DIR = HERE / "wrk"
PGBENCH_DIR = HERE / "pgbench"
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def _raise_nofile() -> None:
    """In wrk's child: a descriptor per connection, 1,024 connections and more."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------------------------------------------- wrk


@dataclass
class WrkRun:
    """One wrk process: its BENCH_JSON report and its wall-clock time."""

    wall: float
    report: dict[str, Any]

    @property
    def seconds(self) -> float:
        return float(self.report["duration_us"]) / 1e6

    @property
    def requests(self) -> int:
        return int(self.report["requests"])

    def ok(self) -> int:
        return sum(n for code, n in self.report["statuses"].items() if 200 <= int(code) < 300)

    def latency_ms(self) -> dict[str, float]:
        lat = self.report["latency_us"]
        return {k: round(float(v) / 1000.0, 3) for k, v in lat.items()}

    def timeline(self) -> list[dict[str, Any]]:
        """Per second: responses, 2xx, p50 and p99 (ms); the last, partial second is scaled to its length."""
        out = []
        for sec, responses, ok, p50, p99 in self.report["timeline"]:
            width = min(1.0, self.seconds - sec)
            if width < 0.5:
                continue  # a sliver at the very end (or answers that arrived after the run)
            out.append({
                "t": sec, "responses": responses, "rps": round(responses / width, 1),
                "ok_rps": round(ok / width, 1), "p50_ms": p50 / 1000.0, "p99_ms": p99 / 1000.0,
            })  # fmt: skip
        return out


def run_wrk(
    wrk: str, url: str, script: Path, ids_file: Path, key_prefix: str, api_key: str, *,
    threads: int, connections: int, seconds: int, timeout: int, extra: tuple[str, ...] = (), delay_ms: int = 0,
    batch: int = 100,
) -> WrkRun:  # fmt: skip
    """Run wrk once for ``seconds`` and parse the JSON line the Lua done() prints. ``extra``: more script arguments
    after the ids file and the key prefix (payments.lua's pm_ tokens file); ``delay_ms``: each connection's mean
    pause between requests (0: none); ``batch``: the bulk scenario's transfers per request."""
    cmd = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{timeout}s", "-s", str(script), url,
        "--", str(ids_file), key_prefix, *extra,
    ]  # fmt: skip
    env = {**os.environ, "SHARDPAY_BENCH_KEY": api_key, "SHARDPAY_BENCH_DELAY_MS": str(delay_ms),
           "SHARDPAY_BENCH_BATCH": str(batch)}  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_raise_nofile,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=seconds + timeout + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"wrk did not finish within {seconds + timeout + 60} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_JSON "):
            report = orjson.loads(line.removeprefix("BENCH_JSON "))
            return WrkRun(wall=time.monotonic() - started, report=report)
    raise RuntimeError(f"wrk printed no BENCH_JSON (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")


def delay_ms(connections: int, rate: int) -> int:
    """The mean pause per connection between requests for at most ``rate`` requests/s in all (0: no pause)."""
    return round(1000 * connections / rate) if rate > 0 else 0


def percentiles(histogram: dict[int, float], wanted: Iterable[float] = PERCENTILES) -> dict[str, float]:
    """Percentiles in milliseconds from a histogram of microsecond values (counts may be fractional)."""
    total = sum(histogram.values())
    result: dict[str, float] = {}
    if not total:
        return {f"p{p:g}": 0.0 for p in wanted}
    ordered = sorted(histogram.items())
    for p in wanted:
        target = total * p / 100.0
        seen = 0.0
        value = ordered[-1][0]
        for bucket, count in ordered:
            seen += count
            if seen >= target - 1e-9:
                value = bucket
                break
        result[f"p{p:g}"] = round(value / 1000.0, 3)
    result["max"] = round(ordered[-1][0] / 1000.0, 3)
    result["mean"] = round(sum(b * n for b, n in ordered) / total / 1000.0, 3)
    return result


# ---------------------------------------------------------------------------------------------------------- CPU


@dataclass
class _Seen:
    label: str
    base: float
    last: float


@dataclass
class CpuSampler:
    """Samples every process's CPU time once a second and attributes it to a label.

    ``ours`` maps pids of the benchmark's own processes to labels (gateway workers are found as children of the
    gateway's pid); PostgreSQL backends are told apart by the database in their process title. wrk is a child
    of this process and exits between slices, so its CPU comes exactly from RUSAGE_CHILDREN instead.
    The resident memory of shardpay's own processes is sampled too, for the flat-memory check.
    """

    ours: Callable[[], dict[int, str]]
    db_prefix: str
    interval: float = 1.0
    seen: dict[tuple[int, float], _Seen] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0
    _t0_wall: float = 0.0
    _t0_cpu: Any = None
    _t0_children: float = 0.0
    _first_pass: bool = True
    rss: dict[tuple[int, str], list[tuple[float, int]]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self._started = time.monotonic()
        self._t0_wall = time.time()
        self._t0_cpu = psutil.cpu_times()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._t0_children = usage.ru_utime + usage.ru_stime
        self._sample()
        self._first_pass = False
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _label(self, proc: psutil.Process, ours: dict[int, str]) -> str | None:
        pid = proc.pid
        if pid in ours:
            return ours[pid]
        name = proc.name() or ""
        title = " ".join(proc.cmdline() or [])
        ppid = proc.ppid()
        if ppid in ours and ours[ppid] == "gateway (uvicorn master)":
            return "gateway worker" if "spawn_main" in title else "gateway (helper)"
        if name == "postgres" or title.startswith("postgres:"):
            if f" {self.db_prefix}_psp " in title:  # the PSP's own cost, apart from shardpay's
                return "postgres backends (psp-sim database)"
            if f" {self.db_prefix}_control " in title:  # the consumers' writes, keys and merchants
                return "postgres backends (bench control database)"
            if f" {self.db_prefix}_" in title:
                return "postgres backends (bench shards)"
            if title.startswith("postgres:") and re.search(r"\d+\.\d+\(\d+\)|\[local\]", title):
                return "postgres backends (other databases)"
            return "postgres (server processes)"
        if name == "redis-server":
            return "redis-server (shared)"
        if name == "beam.smp":
            return "rabbitmq beam.smp (shared)"
        if name == "wrk":
            return None  # counted from RUSAGE_CHILDREN
        return "other processes"

    def _sample(self) -> None:
        ours = self.ours()
        for proc in psutil.process_iter():
            try:
                key = (proc.pid, proc.create_time())
                seen = self.seen.get(key)
                # A process keeps its label: read its name and title once, not every second (that reading cost
                # the harness about 2% of a core, taken from the system it measures). "Other" is asked again
                # when its parent is ours: a gateway worker seen before its parent was known.
                again = seen is None or (seen.label == "other processes" and proc.ppid() in ours)
                label = self._label(proc, ours) if again else seen.label
                if label is None:
                    continue
                cpu = proc.cpu_times()
                used = cpu.user + cpu.system
                if label == "gateway worker" or (proc.pid in ours and label != "gateway (uvicorn master)"):
                    sample = (time.monotonic() - self._started, proc.memory_info().rss)
                    self.rss.setdefault((proc.pid, label), []).append(sample)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if seen is None:
                # Seen for the first time after the start snapshot: born inside the window, all its CPU counts.
                born_inside = not self._first_pass and key[1] >= self._t0_wall - 0.05
                self.seen[key] = _Seen(label, 0.0 if born_inside else used, used)
            else:
                seen.last = used
                if seen.label == "other processes" and label != "other processes":
                    seen.label = label  # a gateway worker seen before its parent was known

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        wall = time.monotonic() - self._started
        t1 = psutil.cpu_times()
        busy = (sum(t1) - t1.idle - getattr(t1, "iowait", 0.0)) - (
            sum(self._t0_cpu) - self._t0_cpu.idle - getattr(self._t0_cpu, "iowait", 0.0)
        )
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = usage.ru_utime + usage.ru_stime - self._t0_children
        ncpu = psutil.cpu_count() or 1
        rows: dict[str, dict[str, Any]] = {}
        for (pid, _), seen in sorted(self.seen.items()):
            used = seen.last - seen.base
            label = seen.label
            if label in ("gateway worker",):
                label = f"gateway worker pid {pid}"
            row = rows.setdefault(label, {"process": label, "pids": 0, "cpu_s": 0.0})
            row["pids"] += 1
            row["cpu_s"] += used
        rows["wrk (load generator)"] = {"process": "wrk (load generator)", "pids": 1, "cpu_s": wrk_cpu}
        attributed = sum(r["cpu_s"] for r in rows.values())
        rows["unattributed (exited processes, kernel)"] = {
            "process": "unattributed (exited processes, kernel)", "pids": 0, "cpu_s": max(0.0, busy - attributed),
        }  # fmt: skip
        table = []
        for row in rows.values():
            if row["cpu_s"] < 0.005 and row["process"] not in ("wrk (load generator)",):
                continue
            row["cores"] = round(row["cpu_s"] / wall, 3) if wall else 0.0
            row["share_pct"] = round(100.0 * row["cpu_s"] / (wall * ncpu), 2) if wall else 0.0
            row["cpu_s"] = round(row["cpu_s"], 2)
            table.append(row)
        table.sort(key=lambda r: -r["cpu_s"])
        self.result = {
            "wall_s": round(wall, 2), "cpus": ncpu, "busy_cpu_s": round(busy, 2),
            "busy_pct": round(100.0 * busy / (wall * ncpu), 1) if wall else 0.0, "wrk_cpu_s": round(wrk_cpu, 3),
            "processes": table, "memory": memory_drift(self.rss),
        }  # fmt: skip
        return self.result


# Memory is compared from this far into the run, once start-up and the first connections are behind it.
MEMORY_SETTLED = 0.2
MEMORY_FLAT = 0.10


def memory_drift(rss: dict[tuple[int, str], list[tuple[float, int]]]) -> list[dict[str, Any]]:
    """Per process: resident memory once settled, at the end, and the change between (flat: within 10 %)."""
    rows = []
    for (pid, label), samples in sorted(rss.items()):
        if len(samples) < 3:
            continue
        settled_at = samples[-1][0] * MEMORY_SETTLED
        base = next(value for t, value in samples if t >= settled_at)
        end = samples[-1][1]
        peak = max(value for _, value in samples)
        drift = (end - base) / base if base else 0.0
        name = f"{label} pid {pid}" if label == "gateway worker" else label
        rows.append({
            "process": name, "settled_mb": round(base / 2**20, 1),
            "end_mb": round(end / 2**20, 1), "peak_mb": round(peak / 2**20, 1), "drift_pct": round(100 * drift, 1),
            "flat": abs(drift) <= MEMORY_FLAT,
        })  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------------ pgbench


PGBENCH_DB = "shardpay_bench_pgbench"
_PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]


def run_pgbench(
    *, clients: int, seconds: int, wallets: int, balance: int, replay_pct: int, timeout_extra: int = 120
) -> dict[str, Any]:
    """The classic single-transfer transaction (loadtest/pgbench/transfer.sql) on a fresh database."""
    for tool in ("psql", "pgbench"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} not found (Debian's postgresql-client)")
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    admin = ["psql", *_PG, "-d", "postgres", "-qAt", "-v", "ON_ERROR_STOP=1"]
    subprocess.run([*admin, "-c", f"DROP DATABASE IF EXISTS {PGBENCH_DB} WITH (FORCE)"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    subprocess.run([*admin, "-c", f"CREATE DATABASE {PGBENCH_DB}"], env=env, check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    subprocess.run(
        ["psql", *_PG, "-d", PGBENCH_DB, "-qAt", "-v", "ON_ERROR_STOP=1", "-v", f"wallets={wallets}",
         "-v", f"balance={balance}", "-f", str(PGBENCH_DIR / "schema.sql")],
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    logdir = tempfile.mkdtemp(prefix="shardpay-pgbench-")
    try:
        cmd = [
            "pgbench", *_PG, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(2, clients)),
            "-T", str(seconds), "-D", f"wallets={wallets}", "-D", f"replay_pct={replay_pct}",
            "-f", str(PGBENCH_DIR / "transfer.sql"), "-l", "--log-prefix", f"{logdir}/tx", PGBENCH_DB,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=seconds + timeout_extra)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = out.decode(errors="replace")
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
        if proc.returncode != 0 or tps is None:
            raise RuntimeError(f"pgbench failed (exit {proc.returncode}): {text[-2000:]}")
        done = re.search(r"number of transactions actually processed: (\d+)", text)
        failed = re.search(r"number of failed transactions: (\d+)", text)
        histogram: dict[int, float] = {}
        for log in Path(logdir).iterdir():
            with open(log) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) >= 3:
                        us = int(parts[2])
                        bucket = us if us < 1000 else _bucket(us)
                        histogram[bucket] = histogram.get(bucket, 0) + 1
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return {
        "clients": clients, "seconds": seconds, "wallets": wallets, "replay_pct": replay_pct,
        "tps": float(tps.group(1)), "transactions": int(done.group(1)) if done else 0,
        "failed": int(failed.group(1)) if failed else 0, "latency_ms": percentiles(histogram),
        "command": " ".join(cmd).replace(logdir, "<tmp>"),
    }  # fmt: skip


def _bucket(us: int) -> int:
    scale = 1
    while us >= 1000 * scale:
        scale *= 10
    return us // scale * scale


def ids_file(work: Path, scenario: str, wallets: list[str], hot: int = 10) -> Path:
    """The wallet ids the Lua script draws from: all of them, or for `hot` 10 spread over the shards."""
    chosen = wallets[:hot] if scenario == "hot" else random.sample(wallets, len(wallets))
    path = work / f"ids-{scenario}.txt"
    path.write_text("\n".join(chosen) + "\n")
    return path
