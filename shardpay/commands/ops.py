"""``shardpay migrate``, ``serve`` and ``run``."""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

import asyncpg

from shardpay.commands.base import CliError, add
from shardpay.config import Settings


def register(sub: Any) -> None:
    add(sub, "migrate", _migrate, "create and migrate the control database and every shard")
    add(sub, "serve", _serve, "run the HTTP gateway (SHARDPAY_WORKERS processes)")
    add(sub, "run", _run, "migrate, then run the gateway, relay, consumers and recovery until Ctrl-C")


async def _migrate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from events import queue_types
    from shards.migrate import migrate

    try:
        applied = await migrate(settings)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"migration failed: {exc}") from None
    return {"applied": applied, "shards": settings.shard_count, "queues": await queue_types.migrate(settings)}


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from gateway.server import HTTP_PROTOCOL

    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="shardpay-metrics-")
    options: dict[str, Any] = dict(
        factory=True, host=settings.host, port=settings.port, workers=settings.workers,
        loop="uvloop", http=HTTP_PROTOCOL, access_log=False, lifespan="on", timeout_graceful_shutdown=10,
        proxy_headers=False,  # nothing reads the client's address; one ASGI layer less per request
    )  # fmt: skip
    if settings.drain_seconds > 0:  # one process (config.py checks it), leaving its load balancer first
        from gateway.drain import DrainingServer

        DrainingServer(uvicorn.Config("gateway.app:create_app", **options), settings.drain_seconds).run()
        return
    uvicorn.run("gateway.app:create_app", **options)


async def _run(args: argparse.Namespace, settings: Settings) -> None:
    from shardpay.supervisor import supervise

    await _migrate(args, settings)
    await supervise(dict(os.environ))
