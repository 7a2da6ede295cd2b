"""``shardpay relay``, ``consume notifications|analytics`` and ``analytics``.

The first three run until SIGTERM or Ctrl-C, logging JSON lines on stderr, and exit 0 after a clean stop.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shardpay import tracing
from shardpay.commands.base import CliError, add
from shardpay.config import Settings
from shardpay.domain.money import CURRENCIES
from shardpay.runtime import settle_gc

Runner = Callable[[Settings, asyncio.Event], Awaitable[None]]


def register(sub: Any) -> None:
    relay = add(sub, "relay", _relay, "publish every shard's outbox to RabbitMQ, continuously")
    relay.add_argument("--batch-size", type=int, default=500, help="rows per publish-and-mark transaction")
    consume = sub.add_parser("consume", help="run an event consumer").add_subparsers(dest="consumer", required=True)
    add(consume, "notifications", _notifications, "deliver signed merchant webhooks, continuously")
    add(consume, "analytics", _analytics, "count money events per merchant, currency and minute, continuously")
    query = add(sub, "analytics", _query, "money volume per minute for one merchant, as JSON")
    query.add_argument("--merchant", required=True)
    query.add_argument("--currency", default=None)
    query.add_argument("--since", default=None, help="ISO 8601 (default: 24 hours ago); naive times are UTC")
    query.add_argument("--until", default=None, help="ISO 8601, exclusive (default: now)")


async def _relay(args: argparse.Namespace, settings: Settings) -> None:
    from events.relay import RelayOptions, run_relay

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    options = RelayOptions(batch_size=args.batch_size, linger=settings.relay_linger)
    await until_signalled(lambda s, stop: run_relay(s, stop, options), settings, "relay")


async def _notifications(args: argparse.Namespace, settings: Settings) -> None:
    from events.notifications import run_notifications

    await until_signalled(run_notifications, settings, "notifications")


async def _analytics(args: argparse.Namespace, settings: Settings) -> None:
    from events.analytics import run_analytics

    await until_signalled(run_analytics, settings, "analytics")


async def until_signalled(run: Runner, settings: Settings, service: str) -> None:
    """Run ``run`` (the process ``service``, in traces) until SIGTERM or SIGINT asks it to stop, then let it
    finish cleanly."""
    tracing.configure(settings.otlp_endpoint, f"shardpay-{service}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settle_gc()
    try:
        await run(settings, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        tracing.shutdown()


async def _query(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from events.analytics import query

    currency, since, until = _window(args)
    conn = await _analytics_connection(settings)
    try:
        data = await query(conn, args.merchant, currency, since, until)
    finally:
        await conn.close()
    return {"merchant": args.merchant, "since": since.isoformat(), "until": until.isoformat(), "data": data}


async def _analytics_connection(settings: Settings) -> asyncpg.Connection:
    """The control database's replica when there is one and it answers (analytics tolerate lag:
    shardpay.services.reads), else the control database itself."""
    for dsn in (settings.control_replica_dsn, settings.control_dsn):
        if dsn is None:
            continue
        try:
            return await asyncpg.connect(dsn, timeout=settings.db_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            error = exc
    raise CliError(f"cannot reach the control database: {error}") from None


def _window(args: argparse.Namespace) -> tuple[str | None, datetime, datetime]:
    if args.currency is not None and args.currency not in CURRENCIES:
        raise CliError(f"--currency must be a supported ISO 4217 code (uppercase), got {args.currency!r}")
    now = datetime.now(UTC)
    since = _instant("--since", args.since, now - timedelta(hours=24))
    until = _instant("--until", args.until, now)
    if since >= until:
        raise CliError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    return args.currency, since, until


def _instant(flag: str, raw: str | None, default: datetime) -> datetime:
    if raw is None:
        return default
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise CliError(f"{flag} has value {raw!r}. Not an ISO 8601 date or time.") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
