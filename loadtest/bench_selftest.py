"""``python -m loadtest.bench --selftest``: wrk with the real Lua script against a null gateway
(loadtest/bench_null.py), no stack: the load generator's own ceiling on this machine."""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
from pathlib import Path

from loadtest import bench_load as load
from loadtest import bench_stack as stack


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
    ids_file = load.ids_file(work, "uniform", [f"wal_{i % 4096:04x}{secrets.token_hex(10)}" for i in range(100_000)])
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
