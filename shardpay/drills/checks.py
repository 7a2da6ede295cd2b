"""After a drill's load: let sagas and events settle, then check what the client was told against the ledger.

- lost: a transfer answered 201 whose row is missing on its source shard, or whose debit (source shard) or
  credit (destination shard) is not in the ledger;
- doubled: an idempotency key with more than one transfer;
- money: the drill's wallets hold exactly what they were funded with (transfers between them move money
  around, never in or out), once no transfer is in flight;
- events: every ``transfer.succeeded`` event of the drill's merchant published and counted by analytics;
- audit: ``shardpay audit`` on every shard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from shardpay import ids
from shardpay.config import Settings
from shardpay.drills.load import Request
from shards.pools import Shards


async def _in_flight(shards: Shards, merchant: str) -> int:
    query = (
        "SELECT count(*) FROM transfers WHERE merchant_id = $1 AND (saga_state = 'debited' OR status = 'processing')"
    )
    return sum([await pool.fetchval(query, merchant) for pool in shards.pools])


async def settle(shards: Shards, merchant: str, within: float) -> dict[str, Any]:
    """Wait (at most ``within`` s) until no transfer of the merchant is in flight (recovery finishes sagas)."""
    started = time.monotonic()
    count = await _in_flight(shards, merchant)
    while count and time.monotonic() - started < within:
        await asyncio.sleep(0.5)
        count = await _in_flight(shards, merchant)
    return {"settled": count == 0, "in_flight": count, "seconds": round(time.monotonic() - started, 1)}


def _shard_of(shards: Shards, object_id: str, prefix: str) -> int:
    slot = ids.parse(object_id, prefix)
    assert slot is not None, object_id
    return shards.index_of(slot)


async def lost(shards: Shards, requests: Iterable[Request]) -> list[str]:
    """The acknowledged transfers (201) that the ledger does not fully hold."""
    acked = [r.acked for r in requests if r.acked is not None]
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for body in acked:
        by_shard.setdefault(_shard_of(shards, body["source"], "wal"), []).append(body)
        by_shard.setdefault(_shard_of(shards, body["destination"], "wal"), []).append(body)
    missing: set[str] = set()
    for shard, bodies in by_shard.items():
        pool = shards.pool(shard)
        wanted = list({b["id"] for b in bodies})
        rows = await pool.fetch(
            "SELECT ref, account_id, sign(amount)::int AS sign FROM ledger_entries WHERE ref = ANY($1)", wanted
        )
        have = {(row["ref"], row["account_id"], row["sign"]) for row in rows}
        transfers = {row[0] for row in await pool.fetch("SELECT id FROM transfers WHERE id = ANY($1)", wanted)}
        for body in bodies:
            source_here = _shard_of(shards, body["source"], "wal") == shard
            if source_here and (body["id"] not in transfers or (body["id"], body["source"], -1) not in have):
                missing.add(body["id"])
            if (
                _shard_of(shards, body["destination"], "wal") == shard
                and (body["id"], body["destination"], 1) not in have
            ):
                missing.add(body["id"])
    return sorted(missing)


async def doubled(shards: Shards, merchant: str) -> list[str]:
    """Keys of the merchant with more than one transfer (a key's transfers all live on its source's shard)."""
    query = "SELECT idempotency_key FROM transfers WHERE merchant_id = $1 GROUP BY 1 HAVING count(*) > 1"
    found: list[str] = []
    for pool in shards.pools:
        found.extend(row[0] for row in await pool.fetch(query, merchant))
    return sorted(found)


async def money(shards: Shards, wallet_ids: list[str], funded: int) -> dict[str, Any]:
    total = 0
    for pool in shards.pools:
        total += int(
            await pool.fetchval(
                "SELECT coalesce(sum(available + pending), 0) FROM accounts WHERE id = ANY($1)", wallet_ids
            )
        )
    return {"ok": total == funded, "funded": funded, "held": total, "difference": total - funded}


async def events(shards: Shards, merchant: str, within: float) -> dict[str, Any]:
    """Every transfer.succeeded event of the merchant published and applied by analytics (waiting ``within``)."""
    query = "SELECT event_id FROM outbox WHERE merchant_id = $1 AND type = 'transfer.succeeded'"
    wanted = {row[0] for pool in shards.pools for row in await pool.fetch(query, merchant)}
    started = time.monotonic()
    while True:
        rows = await shards.control.fetch(
            "SELECT event_id FROM analytics_processed WHERE event_id = ANY($1)", list(wanted)
        )
        missing = wanted - {row[0] for row in rows}
        if not missing or time.monotonic() - started > within:
            break
        await asyncio.sleep(0.5)
    return {
        "ok": not missing,
        "events": len(wanted),
        "not_applied": len(missing),
        "seconds": round(time.monotonic() - started, 1),
    }


async def audit(settings: Settings) -> dict[str, Any]:
    from shards.audit import audit as run_audit

    report = await run_audit(settings)
    return {"ok": bool(report["ok"]), "violation_counts": report["violation_counts"]}
