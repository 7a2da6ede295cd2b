"""After the transfer scenarios' load: wait for sagas in flight, then read every shard's money, transfers and
outbox, and check that the money in the system is exactly what was seeded, each key moved money once, and no
request answered 500 or 422."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from loadtest import bench_report as report
from loadtest.bench_stack import CURRENCY, Seeded, say
from shardpay.config import Settings


def transfers(result: dict[str, Any], settings: Settings, seeded: Seeded, settle_timeout: float) -> None:
    """The transfer scenarios' checks, into ``result`` (the audit is the harness's, for every scenario)."""
    say("waiting for cross-shard transfers to settle")
    result["settle"] = asyncio.run(settle(settings, settle_timeout))
    result["checks"]["settled"] = result["settle"]["settled"]
    state = asyncio.run(ledger_state(settings, seeded.merchant))
    result["ledger"] = state
    result["money"] = money_check(seeded.total, state)
    result["checks"]["money"] = result["money"]["ok"]
    result["effects"] = report.effects(result["load"], state)
    result["checks"]["one_effect_per_key"] = result["effects"]["ok"]
    warm = (result["load"]["warmup"] or {}).get("statuses", {})
    for code in ("500", "422"):  # a 500 is always a bug; a replay with the same body is never a 422
        seen = result["load"]["statuses"].get(code, 0) + warm.get(code, 0)
        result["checks"][f"no_{code}"] = seen == 0


async def in_flight(settings: Settings) -> tuple[int, int]:
    """Cross-shard transfers whose saga is still open (count, amount), over all shards."""
    count = amount = 0
    for dsn in settings.shard_dsns:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(amount), 0) AS amount FROM transfers WHERE saga_state = 'debited'"
            )
        finally:
            await conn.close()
        assert row is not None
        count += row["n"]
        amount += int(row["amount"])
    return count, amount


async def settle(settings: Settings, limit: float) -> dict[str, Any]:
    """Wait (at most ``limit`` s) until no cross-shard transfer is in flight."""
    started = time.monotonic()
    count, amount = await in_flight(settings)
    first = count
    while count and time.monotonic() - started < limit:
        await asyncio.sleep(0.5)
        count, amount = await in_flight(settings)
    return {
        "in_flight_at_end_of_load": first, "in_flight": count, "in_flight_amount": amount,
        "seconds": round(time.monotonic() - started, 2), "settled": count == 0,
    }  # fmt: skip


async def ledger_state(settings: Settings, merchant: str) -> dict[str, Any]:
    """Money (wallets, funding, transit, interchange), the merchant's transfers and idempotency keys, outbox."""
    totals: dict[str, int] = {"wallets": 0, "wallet_count": 0, "funding": 0, "transit": 0, "interchange": 0}
    transfers: dict[str, int] = {"rows": 0, "distinct_keys": 0, "cross_shard": 0}
    statuses: dict[str, int] = {}
    outbox_unpublished = 0
    for dsn in settings.shard_dsns:
        conn = await asyncpg.connect(dsn)
        try:
            wallets = await conn.fetchrow(
                "SELECT coalesce(sum(available), 0) AS available, count(*) AS n FROM accounts WHERE kind = 'wallet'"
            )
            system = await conn.fetch(
                "SELECT a.kind, coalesce(sum(e.amount), 0) AS total FROM accounts a "
                "JOIN ledger_entries e ON e.account_id = a.id WHERE a.kind <> 'wallet' AND a.currency = $1 "
                "GROUP BY 1",
                CURRENCY,
            )
            made = await conn.fetchrow(
                "SELECT count(*) AS rows, count(DISTINCT idempotency_key) AS keys, "
                "count(*) FILTER (WHERE saga_state IS NOT NULL) AS cross FROM transfers WHERE merchant_id = $1",
                merchant,
            )
            by_status = await conn.fetch(
                "SELECT status, count(*) AS n FROM transfers WHERE merchant_id = $1 GROUP BY 1", merchant
            )
            outbox_unpublished += await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        finally:
            await conn.close()
        assert wallets is not None and made is not None
        totals["wallets"] += int(wallets["available"])
        totals["wallet_count"] += wallets["n"]
        for row in system:
            totals[row["kind"]] += int(row["total"])
        transfers["rows"] += made["rows"]
        transfers["distinct_keys"] += made["keys"]  # a key's transfers all live on its source's shard
        transfers["cross_shard"] += made["cross"]
        for row in by_status:
            statuses[row["status"]] = statuses.get(row["status"], 0) + row["n"]
    transfers["duplicated_keys"] = transfers["rows"] - transfers["distinct_keys"]
    return {
        "money": totals,
        "transfers": {**transfers, "by_status": statuses},
        "outbox_unpublished": outbox_unpublished,
    }


def money_check(seeded_total: int, state: dict[str, Any]) -> dict[str, Any]:
    """The money in the system is exactly what was seeded: wallets + in flight == seeded == -funding."""
    money = state["money"]
    in_flight = money["transit"] + money["interchange"]
    in_system = money["wallets"] + in_flight
    ok = in_system == seeded_total and -money["funding"] == seeded_total
    return {
        "ok": ok, "seeded": seeded_total, "wallets": money["wallets"], "in_flight": in_flight,
        "funding": money["funding"], "difference": in_system - seeded_total,
    }  # fmt: skip
