"""Completing what the PSP settled and shardpay never made final (a lost webhook, a crash): through the same
finishing step as the executor's answer and the PSP's webhook (``shardpay.services.psp_work``), so the record
gets its ledger entries, its event (and with it the merchant's webhook) and its payment's outcome exactly as if
the webhook had come. The step decides under the record's row lock and a second call changes nothing, so a
record is completed once however many runs, executors and webhooks race for it."""

from __future__ import annotations

import asyncio

import asyncpg

from shardpay.services.psp_work import KINDS, Outcome
from shards import reconcile
from shards.errors import on_shard
from shards.pools import Shards

PAGE = 200
CONCURRENCY = 8
# The settlement line's status, in each kind's own words.
OUTCOME = {
    ("charge", "settled"): "succeeded", ("refund", "settled"): "succeeded", ("payout", "settled"): "paid",
    ("charge", "failed"): "failed", ("refund", "failed"): "failed", ("payout", "failed"): "failed",
}  # fmt: skip


async def fix_shard(shards: Shards, shard: int, conn: asyncpg.Connection) -> None:
    """Complete this shard's missing_internal records, a page at a time, and note each one's fate."""
    after = ("", "")
    gate = asyncio.Semaphore(CONCURRENCY)
    while page := await reconcile.to_fix(conn, after, PAGE):
        applied = await asyncio.gather(*(_one(shards, shard, row, gate) for row in page))
        await reconcile.mark_fixed(conn, [(r["reference"], r["type"]) for r in page], applied)
        after = (page[-1]["reference"], page[-1]["type"])


async def _one(shards: Shards, shard: int, line: asyncpg.Record, gate: asyncio.Semaphore) -> bool:
    kind = KINDS[line["type"]]
    async with gate:
        rows = await on_shard(shard, kind.rows(shards.pool(shard), [line["reference"]]))
        row = rows.get(line["reference"])
        if row is None:  # compared a moment ago, and records are never deleted: left for review
            return False
        outcome = Outcome(OUTCOME[(line["type"], line["psp_status"])], line["psp_reference"])
        return await kind.finish(shards, row, outcome)
