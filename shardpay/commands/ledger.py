"""``shardpay wallets credit``, ``audit`` and ``recover``."""

from __future__ import annotations

import argparse
import secrets
from typing import Any

import idempotency
from shardpay.commands.base import CliError, add
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.domain.money import parse_amount
from shards.errors import TRANSIENT


def register(sub: Any) -> None:
    wallets = sub.add_parser("wallets", help="operate on wallets").add_subparsers(dest="action", required=True)
    credit = add(wallets, "credit", _credit, "credit a wallet from its shard's funding account")
    credit.add_argument("wallet_id")
    credit.add_argument("amount", type=int, help="minor units, 1..10^15")
    credit.add_argument("--reason", required=True)
    credit.add_argument(
        "--idempotency-key", default=None,
        help="the same key credits once (1-255 printable ASCII); one is made up and printed when absent",
    )  # fmt: skip
    add(sub, "audit", _audit, "check every ledger rule on every shard; exit 1 on any violation")
    add(sub, "recover", _recover, "finish or compensate interrupted cross-shard transfers, continuously")


async def _credit(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shardpay.services import wallets
    from shards.pools import open_shards

    if not args.reason.strip():
        raise CliError("--reason must not be empty")
    if args.idempotency_key is not None and not idempotency.valid_key(args.idempotency_key):
        raise CliError(f"--idempotency-key must be 1 to 255 printable ASCII characters, got {args.idempotency_key!r}")
    # Made up before anything can fail, so that a failure can name the key its retry must use.
    key = args.idempotency_key or f"credit_{secrets.token_hex(12)}"
    try:
        amount = parse_amount(args.amount)
        async with open_shards(settings, pool_max=2) as shards:
            return await wallets.credit(shards, args.wallet_id, amount, args.reason, key)
    except ApiError as error:
        if error.status == 503 or error.status == 409:
            raise CliError(f"{error.message} Retry with --idempotency-key {key}: it credits once.") from None
        raise CliError(error.message) from None
    except TRANSIENT as exc:
        raise CliError(
            f"a database is unreachable ({type(exc).__name__}); retry with --idempotency-key {key}: it credits once"
        ) from None


async def _audit(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shards.audit import audit

    return await audit(settings)


async def _recover(args: argparse.Namespace, settings: Settings) -> None:
    from shardpay.services.recovery import run_forever

    await run_forever(settings)
