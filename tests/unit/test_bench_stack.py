"""The benchmark's stack has a PSP of its own: its simulator's port, database and webhooks never meet a
developer's `make run` (gateway 8000, simulator 8100, database shardpay_psp). `make bench` runs the real thing."""

from __future__ import annotations

import re

import pytest

from loadtest import bench_stack
from shardpay.config import Settings


def test_the_bench_simulator_listens_beside_the_bench_gateway_and_calls_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A developer's shell pointing at their own stack must not leak into the bench's.
    monkeypatch.setenv("SHARDPAY_PSP_PORT", "8100")
    monkeypatch.setenv("SHARDPAY_PSP_WEBHOOK_URL", "http://127.0.0.1:8000/v1/webhooks/psp")
    settings = Settings.from_env(bench_stack.stack_env("shardpay_bench", 4, 8300, 2, {}))
    assert (settings.psp_host, settings.psp_port) == ("127.0.0.1", 8400)
    assert settings.psp_url == settings.psp_public_url == "http://127.0.0.1:8400"
    assert settings.psp_dsn == f"{bench_stack.PG}/shardpay_bench_psp"
    assert settings.psp_webhook_url == "http://127.0.0.1:8300/v1/webhooks/psp"
    assert settings.log_requests is False


def test_another_bench_port_moves_its_simulator_too() -> None:
    settings = Settings.from_env(bench_stack.stack_env("shardpay_bench_x", 1, 9000, 1, {}))
    assert settings.psp_port == bench_stack.psp_port(9000) == 9100
    assert settings.psp_webhook_url == "http://127.0.0.1:9000/v1/webhooks/psp"
    assert settings.psp_dsn.endswith("/shardpay_bench_x_psp")


@pytest.mark.parametrize(
    ("name", "dropped"),
    [
        ("shardpay_bench_control", True),
        ("shardpay_bench_shard_3", True),
        ("shardpay_bench_psp", True),  # re-created and migrated by the simulator at its start
        ("shardpay_bench_pgbench", False),  # pgbench's, dropped by its own step
        ("shardpay_bench_psp_stack", False),
        ("shardpay_psp", False),  # make run's
    ],
)
def test_each_run_starts_from_fresh_stack_databases_the_simulators_included(name: str, dropped: bool) -> None:
    pattern = f"^{re.escape('shardpay_bench')}_{bench_stack.STACK_DATABASES}$"
    assert bool(re.search(pattern, name)) is dropped
