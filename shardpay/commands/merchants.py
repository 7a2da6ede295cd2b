"""``shardpay merchants create``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg
import httpx

from events import addresses
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
    rate = settings.default_rate if args.rate is None else args.rate
    burst = settings.default_burst if args.burst is None else args.burst
    if rate < 1 or burst < 1:
        raise CliError(f"--rate and --burst must be >= 1, got rate={rate} burst={burst}")
    return rate, burst


async def _check_webhook(url: str, settings: Settings) -> str | None:
    """Refuse a URL whose host is, or resolves to, an address webhooks may not reach (the rule every delivery
    applies again, to the address it connects to); a warning if the host does not resolve now.

    A name that does not resolve is accepted: deliveries judge the address at each connection, so it opens
    nothing, and refusing it would turn away a merchant whose DNS is not live yet (or a resolver's bad moment).
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(f"--webhook-url must be an http(s) URL, got {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(settings.webhook_timeout):
            found = await addresses.resolve(parsed.host, port)
    except (OSError, TimeoutError):
        return f"{parsed.host} does not resolve now; every delivery resolves it and checks the address"
    _, refused = addresses.screen(found, settings.webhook_allow_private)
    if refused:
        why = "; ".join(_explain(parsed.host, refusal) for refusal in refused)
        raise CliError(f"--webhook-url {url!r} is refused: {why}")
    return None


def _explain(host: str, refusal: addresses.Refusal) -> str:
    if refusal.address == host:
        return str(refusal)
    return f"{host} resolves to {refusal.address}, which is {refusal.why}"


async def _create(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    rate, burst = _check(args, settings)
    warning = None if args.webhook_url is None else await _check_webhook(args.webhook_url, settings)
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
        **({"webhook_warning": warning} if warning else {}),
    }
