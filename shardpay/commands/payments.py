"""``shardpay execute`` (the PSP executor) and ``shardpay dlq list | replay ID|--all`` (its dead letters)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg

from shardpay.commands.base import CliError, add
from shardpay.commands.events import until_signalled
from shardpay.config import Settings


def register(sub: Any) -> None:
    add(sub, "execute", _execute, "charge payment orders, send payouts and refunds at the PSP, continuously")
    dlq = sub.add_parser("dlq", help="PSP work that could not finish").add_subparsers(dest="action", required=True)
    listing = add(dlq, "list", _list, "every dead-lettered order, payout and refund, with its reason")
    listing.add_argument("--limit", type=int, default=1000, help="at most this many per shard")
    replay = add(dlq, "replay", _replay, "put dead-lettered work back (it first asks the PSP what became of it)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("work_id", nargs="?", help="an order (po_), payout (out_) or refund (re_) id")
    which.add_argument("--all", action="store_true", help="every dead-lettered piece of work")


async def _execute(args: argparse.Namespace, settings: Settings) -> None:
    from shardpay.services.executor import run_executor

    await until_signalled(run_executor, settings, "executor")


async def _each_shard(settings: Settings, work: Any) -> list[Any]:
    from shards.pools import open_shards

    try:
        async with open_shards(settings, pool_max=2) as shards:
            return list(await asyncio.gather(*(work(i, pool) for i, pool in enumerate(shards.pools))))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise CliError(f"a database is unreachable: {type(exc).__name__}: {exc}") from None


async def _list(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shards import work

    async def one(shard: int, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        rows = await work.dead(pool, args.limit)
        return [{"id": r["id"], "kind": r["kind"], "shard": shard, "attempts": r["attempts"],
                 "reason": r["dead_reason"], "since": r["updated_at"].isoformat()} for r in rows]  # fmt: skip

    data = [entry for shard in await _each_shard(settings, one) for entry in shard]
    return {"object": "list", "data": data, "count": len(data)}


async def _replay(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shards import work

    async def one(shard: int, pool: asyncpg.Pool) -> list[str]:
        return await work.replay(pool, None if args.all else args.work_id)

    replayed = [work_id for shard in await _each_shard(settings, one) for work_id in shard]
    if not args.all and not replayed:
        raise CliError(f"{args.work_id!r} is not dead-lettered (it may have finished, or never existed)")
    return {"replayed": replayed, "count": len(replayed)}
