"""``shardpay reconcile --daily`` (the child ``shardpay run`` starts): the previous day once, whatever the
restarts; a run that cannot happen is logged and tried again; the last run reaches /metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from shardpay.config import Settings
from tests.conftest import free_port, stop_process
from tests.integration.reconcile.conftest import control_fetch, today


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "shardpay", "reconcile", "--daily"], env=env, stderr=err)


def _lines(log: Path, event: str) -> list[dict[str, Any]]:
    found = [orjson.loads(t) for t in log.read_text().splitlines() if t.startswith("{")]
    return [line for line in found if line.get("event") == event]


async def _until(what: str, check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while not (found := await check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        await asyncio.sleep(0.1)
    return found


async def _daily_runs(settings: Settings) -> list[Any]:
    day = today() - timedelta(days=1)
    return await control_fetch(settings, "SELECT * FROM reconcile_runs WHERE day = $1 AND trigger = 'daily'", day)


async def test_the_daily_run_happens_once_is_retried_when_it_cannot_and_reaches_metrics(
    rc_env: dict[str, str], rc_settings: Settings, rc_gateway: str, rc_sim: str, tmp_path: Path
) -> None:
    env = {**rc_env, "SHARDPAY_RECONCILE_AT": "00:00", "SHARDPAY_RECONCILE_RETRY": "0.5"}  # yesterday is due
    assert await _daily_runs(rc_settings) == []
    down = tmp_path / "down.log"
    proc = _start({**env, "SHARDPAY_PSP_URL": f"http://127.0.0.1:{free_port()}"}, down)
    try:
        await _until("two failed tries", lambda: _async(len(_lines(down, "reconcile.failed")) >= 2))
    finally:
        stop_process(proc)
    assert await _daily_runs(rc_settings) == []  # nothing stored by a run that could not happen

    log = tmp_path / "daily.log"
    proc = _start(env, log)
    try:
        runs = await _until("the daily run", lambda: _daily_runs(rc_settings))
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    logged = _lines(log, "reconcile.run")
    assert len(logged) == 1 and logged[0]["trigger"] == "daily" and logged[0]["run"] == runs[0]["id"]
    proc = _start(env, log)  # a restart: the day is done, it is not run again
    try:
        await _until("the skip", lambda: _async(bool(_lines(log, "reconcile.skipped"))))
    finally:
        stop_process(proc)
    assert len(await _daily_runs(rc_settings)) == 1 and len(_lines(log, "reconcile.run")) == 1
    await _metrics_show_the_last_run(rc_settings, rc_gateway)


async def _async(value: Any) -> Any:
    return value


async def _metrics_show_the_last_run(settings: Settings, gateway: str) -> None:
    last = (await control_fetch(settings, "SELECT * FROM reconcile_runs ORDER BY finished_at DESC LIMIT 1"))[0]

    async def scraped() -> str | None:
        async with httpx.AsyncClient(base_url=gateway) as http:
            text = (await http.get("/metrics")).text
        return text if f'shardpay_reconcile_last_run_info{{date="{last["day"]}",run="{last["id"]}"' in text else None

    text = await _until("the last run in /metrics", scraped, within=5)
    counts = orjson.loads(last["counts"])
    for category, count in counts.items():
        assert f'shardpay_reconcile_records{{category="{category}"}} {float(count)}' in text, text
    assert f"shardpay_reconcile_last_run_exit_status {float(last['exit_status'])}" in text
