"""wrk with the real Lua script against a server that does no shardpay work, no stack needed.

``python -m loadtest.bench --selftest``: against a null server (loadtest/bench_null.py), the load generator's
own ceiling on this machine. ``--ceiling``: against uvicorn + Starlette + orjson answering a trivial POST
(loadtest/bench_trivial.py) with the gateway's worker count, the ceiling of the HTTP layer alone.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from loadtest import bench_load as load
from loadtest import bench_stack as stack


@dataclass(frozen=True)
class Against:
    """One wrk run against a server: its rate and what the generator and the server each spent per request."""

    rps: float
    requests: int
    wall: float
    wrk_cpu: float
    server_cpu: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process and its children so far (uvicorn's workers are the master's children)."""
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _against(argv: list[str], port: int, seconds: int, connections: int, threads: int) -> Against:
    import resource

    wrk = stack.ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="shardpay-bench-selftest-"))
    ids_file = load.ids_file(work, "uniform", [f"wal_{i % 4096:04x}{secrets.token_hex(10)}" for i in range(100_000)])
    server = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # uvicorn's workers start after its socket opens
        tree = psutil.Process(server.pid)
        server_before = _tree_cpu(tree)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        one = load.run_wrk(
            wrk, f"http://127.0.0.1:{port}", load.WRK_DIR / "uniform.lua", ids_file, "selftest", "sk_selftest",
            threads=threads, connections=connections, seconds=seconds, timeout=5,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = _tree_cpu(tree) - server_before
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
    wrk_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Against(one.requests / one.seconds, one.requests, one.wall, wrk_cpu, server_cpu)


def _per_request(cpu: float, run: Against) -> float:
    return 1e6 * cpu / run.requests if run.requests else 0.0


def selftest(seconds: int, connections: int, threads: int) -> int:
    """wrk with the real Lua script against a null gateway (loadtest/bench_null.py): the generator's own ceiling."""
    port = _free_port()
    run = _against([sys.executable, "-m", "loadtest.bench_null", str(port)], port, seconds, connections, threads)
    per_request = _per_request(run.wrk_cpu, run)
    print(
        f"wrk self-test (null gateway, {connections} connections, {threads} wrk thread(s), {seconds} s, "
        f"the real transfer Lua script): {run.rps:,.0f} req/s; wrk used {run.wrk_cpu / run.wall:.2f} cores, "
        f"{per_request:.1f} µs CPU per request -> one core drives ~{1e6 / per_request if per_request else 0:,.0f} req/s"
    )
    ok = run.rps >= 15_000
    print(f"RESULT {'PASS' if ok else 'FAIL'} (15,000 req/s from one core: {'yes' if ok else 'no'})")
    return 0 if ok else 1


def measure_ceiling(seconds: int, connections: int, threads: int, workers: int) -> dict[str, Any]:
    """uvicorn + Starlette + orjson answering a trivial POST (loadtest/bench_trivial.py), ``workers`` processes:
    its rate and CPU per request, what the HTTP layer alone costs here and now."""
    port = _free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "loadtest.bench_trivial:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    run = _against(argv, port, seconds, connections, threads)
    return {
        "rps": round(run.rps, 1), "workers": workers, "connections": connections, "seconds": seconds,
        "server_us": round(_per_request(run.server_cpu, run), 1), "wrk_us": round(_per_request(run.wrk_cpu, run), 1),
        "server_cores": round(run.server_cpu / run.wall, 2), "wrk_cores": round(run.wrk_cpu / run.wall, 2),
    }  # fmt: skip


def ceiling(seconds: int, connections: int, threads: int, workers: int) -> int:
    """The HTTP layer's ceiling on its own (measure_ceiling), printed."""
    c = measure_ceiling(seconds, connections, threads, workers)
    print(
        f"HTTP ceiling (uvicorn + Starlette + orjson, a trivial POST, {workers} worker(s), {connections} "
        f"connections, {seconds} s): {c['rps']:,.0f} req/s; the server used {c['server_cores']:.2f} cores "
        f"({c['server_us']:.0f} µs CPU per request), wrk {c['wrk_cores']:.2f} cores ({c['wrk_us']:.0f} µs per request)"
    )
    print(f"RESULT PASS (no check: a measurement; 10,000 req/s would take {c['server_us'] / 100:.2f} cores for HTTP)")
    return 0
