"""``shardpay wallets credit``, ``audit`` and ``recover``."""

from __future__ import annotations

import argparse
from typing import Any

from shardpay.commands.base import CliError, add
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.domain.money import parse_amount


def register(sub: Any) -> None:
    wallets = sub.add_parser("wallets", help="operate on wallets").add_subparsers(dest="action", required=True)
    credit = add(wallets, "credit", _credit, "credit a wallet from its shard's funding account")
    credit.add_argument("wallet_id")
    credit.add_argument("amount", type=int, help="minor units, 1..10^15")
    credit.add_argument("--reason", required=True)
    add(sub, "audit", _audit, "check every ledger rule on every shard; exit 1 on any violation")
    add(sub, "recover", _recover, "finish or compensate interrupted cross-shard transfers, continuously")


async def _credit(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shardpay.services import wallets
    from shards.pools import open_shards

    if not args.reason.strip():
        raise CliError("--reason must not be empty")
    try:
        amount = parse_amount(args.amount)
        async with open_shards(settings, pool_max=2) as shards:
            return await wallets.credit(shards, args.wallet_id, amount, args.reason)
    except ApiError as error:
        raise CliError(error.message) from None


async def _audit(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shards.audit import audit

    return await audit(settings)


async def _recover(args: argparse.Namespace, settings: Settings) -> None:
    from shardpay.services.recovery import run_forever

    await run_forever(settings)
