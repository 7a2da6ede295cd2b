"""``shardpay run``: the gateway, the outbox relay, the consumers, saga recovery, the PSP simulator, the executor
and the daily reconciliation as child processes.

A child that dies is started again after a pause; Ctrl-C or SIGTERM stops them all (SIGTERM, then SIGKILL
after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from shardpay.config import Settings

CHILDREN: dict[str, list[str]] = {
    "gateway": ["serve"],
    "relay": ["relay"],
    "notifications": ["consume", "notifications"],
    "analytics": ["consume", "analytics"],
    "recovery": ["recover"],
    # The stand-in for a real PSP (its own database, migrated at its start): shardpay reaches it over HTTP only.
    "psp-sim": ["psp-sim"],
    "executor": ["execute"],
}
# The daily reconciliation, unless SHARDPAY_RECONCILE_DAILY is off.
RECONCILER = {"reconciler": ["reconcile", "--daily"]}
GRACE = 10.0


def default_children(env: Mapping[str, str]) -> dict[str, list[str]]:
    """What ``shardpay run`` starts, by the settings in ``env``."""
    daily = Settings.from_env(env).reconcile_daily
    return {**CHILDREN, **(RECONCILER if daily else {})}


def _say(event: str, **fields: object) -> None:
    sys.stderr.write(orjson.dumps({"event": event, **fields}).decode() + "\n")


async def _keep_running(
    name: str, argv: Sequence[str], stop: asyncio.Event, env: dict[str, str], pid_dir: Path | None
) -> None:
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shardpay", *argv, env=env)
        _say("started", child=name, pid=proc.pid)
        if pid_dir is not None:  # where `shardpay drill` finds the child it kills
            (pid_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await _terminate(proc)
            waiter.cancel()
            return
        stopper.cancel()
        _say("exited", child=name, pid=proc.pid, returncode=proc.returncode)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), GRACE)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def supervise(
    env: dict[str, str],
    children: Mapping[str, Sequence[str]] | None = None,
    child_env: Mapping[str, Mapping[str, str]] | None = None,
    stop: asyncio.Event | None = None,
    pid_dir: Path | None = None,
) -> None:
    """Run ``children`` (name -> ``shardpay`` arguments; by default ``shardpay run``'s, ``default_children``)
    until SIGINT or SIGTERM, or until ``stop`` is set when
    the caller owns the signals (``shardpay ha up``, which also gives some children settings of their own in
    ``child_env`` and asks for pid files in ``pid_dir``)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    extra = child_env or {}
    with tempfile.TemporaryDirectory(prefix="shardpay-metrics-") as metrics_dir:
        env = {**env, "PROMETHEUS_MULTIPROC_DIR": env.get("PROMETHEUS_MULTIPROC_DIR", metrics_dir)}
        running = default_children(env) if children is None else children
        await asyncio.gather(*(
            _keep_running(name, argv, stop, {**env, **extra.get(name, {})}, pid_dir) for name, argv in running.items()
        ))  # fmt: skip
    _say("stopped")
