"""``shardpay merchants create``."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from shardpay.commands.base import CliError, add
from shardpay.config import Settings
from shards.control import create_merchant


def register(sub: Any) -> None:
    merchants = sub.add_parser("merchants", help="manage merchants").add_subparsers(dest="action", required=True)
    create = add(merchants, "create", _create, "create a merchant and its API key")
    create.add_argument("--name", required=True)
    create.add_argument("--webhook-url", default=None)
    create.add_argument("--rate", type=int, default=None, help="requests per second (default: SHARDPAY_DEFAULT_RATE)")
    create.add_argument("--burst", type=int, default=None, help="burst size (default: SHARDPAY_DEFAULT_BURST)")


def _check(args: argparse.Namespace, settings: Settings) -> tuple[int, int]:
    if not args.name.strip():
        raise CliError("--name must not be empty")
    if args.webhook_url is not None:
        parts = urlsplit(args.webhook_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"--webhook-url must be an http(s) URL, got {args.webhook_url!r}")
    rate = settings.default_rate if args.rate is None else args.rate
    burst = settings.default_burst if args.burst is None else args.burst
    if rate < 1 or burst < 1:
        raise CliError(f"--rate and --burst must be >= 1, got rate={rate} burst={burst}")
    return rate, burst


async def _create(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    rate, burst = _check(args, settings)
    try:
        conn = await asyncpg.connect(settings.control_dsn, timeout=settings.db_timeout)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot reach the control database: {exc}") from None
    try:
        created = await create_merchant(conn, args.name, args.webhook_url, rate, burst)
    finally:
        await conn.close()
    return {
        "id": created.merchant.id,
        "name": created.merchant.name,
        "api_key": created.api_key,
        "api_key_id": created.key_id,
        "webhook_secret": created.webhook_secret,
        "rate": rate,
        "burst": burst,
        "webhook_url": args.webhook_url,
    }
