"""``shardpay psp-sim``: the PSP simulator (``../shared/PSP.md``), its own process and database."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from shardpay.commands.base import CliError, add
from shardpay.config import Settings


def register(sub: Any) -> None:
    parser = add(sub, "psp-sim", _psp_sim, "run the PSP simulator (SHARDPAY_PSP_HOST:SHARDPAY_PSP_PORT)")
    parser.add_argument("--migrate", action="store_true", help="create and migrate its database, then exit")


def _psp_sim(args: argparse.Namespace, settings: Settings) -> Any:
    if args.migrate:
        return _migrate(settings)
    from pspsim.server import serve

    serve(settings)
    return None


async def _migrate(settings: Settings) -> dict[str, Any]:
    from pspsim.db import migrate

    try:
        applied = await migrate(settings.psp_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"PSP simulator migration failed: {exc}") from None
    return {"applied": applied}
