"""``shardpay keys create|list|revoke``: a merchant's API keys. A revoked key stops working in every gateway
process within a second (each follows the revocations: ``gateway.auth``)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from shardpay.commands.base import CliError, add
from shardpay.config import Settings
from shards import keys


def register(sub: Any) -> None:
    commands = sub.add_parser("keys", help="manage a merchant's API keys").add_subparsers(dest="action", required=True)
    create = add(commands, "create", _create, "make a new API key for a merchant (shown once)")
    create.add_argument("--merchant", required=True, help="the merchant's id (mer_...)")
    create.add_argument("--name", default=None, help="a label to recognise the key by")
    listing = add(commands, "list", _list, "a merchant's API keys, revoked ones included (never the keys themselves)")
    listing.add_argument("--merchant", required=True)
    revoke = add(commands, "revoke", _revoke, "revoke an API key by its id (key_...); revoking twice is harmless")
    revoke.add_argument("key_id")


@contextlib.asynccontextmanager
async def _control(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(settings.control_dsn, timeout=settings.db_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot reach the control database: {exc}") from None
    try:
        yield conn
    finally:
        await conn.close()


async def _merchant_exists(conn: asyncpg.Connection, merchant_id: str) -> None:
    if await conn.fetchval("SELECT 1 FROM merchants WHERE id = $1", merchant_id) is None:
        raise CliError(f"--merchant has value {merchant_id!r}: no such merchant")


async def _create(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    if args.name is not None and not args.name.strip():
        raise CliError("--name must not be empty")
    async with _control(settings) as conn:
        await _merchant_exists(conn, args.merchant)
        made = await keys.insert(conn, args.merchant, args.name)
        listed = [k for k in await keys.listed(conn, args.merchant) if k["id"] == made.id]
    return {**listed[0], "api_key": made.api_key}


async def _list(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    async with _control(settings) as conn:
        await _merchant_exists(conn, args.merchant)
        return {"object": "list", "data": await keys.listed(conn, args.merchant)}


async def _revoke(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    async with _control(settings) as conn:
        revoked = await keys.revoke(conn, args.key_id)
    if revoked is None:
        raise CliError(f"no API key has the id {args.key_id!r}")
    return revoked
