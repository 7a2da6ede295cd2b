"""A gateway behind a load balancer leaves it before it stops: after SIGTERM, /readyz says "draining" (503, what
HAProxy's check takes it out on) while requests are still served, and the process exits after the drain period."""

from __future__ import annotations

import signal
import time

import httpx

from shardpay.config import Settings
from tests.conftest import free_port, start_gateway


def test_sigterm_drains_then_stops(migrated: Settings, env: dict[str, str]) -> None:
    port = free_port()
    proc = start_gateway({**env, "SHARDPAY_PORT": str(port), "SHARDPAY_WORKERS": "1", "SHARDPAY_DRAIN_SECONDS": "2"})
    url = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert (ready.status_code, ready.json()["status"]) == (503, "draining"), ready.text
        assert ready.headers["Retry-After"] == "1"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # still serving
        proc.wait(15)
        assert time.monotonic() - signalled >= 2.0  # it waited out the drain period
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
