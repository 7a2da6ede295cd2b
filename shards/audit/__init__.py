"""``shardpay audit``: every ledger rule in API.md, checked on every shard with aggregate queries.

Rules about one shard are read from one REPEATABLE READ snapshot of that shard, so they are exact even under
live traffic. Shards share no snapshot, so the cross-shard rules first compare per-slot digests of the transfer
and inbound tables and look at single transfers only in slots that differ; those reads go source shard first,
then destination, so a transfer moving during the audit is never mistaken for a broken one. The one global
sum (interchange) is re-read before a mismatch is reported.

The per-shard rules live in ``shard``, the cross-shard rules and totals in ``cross``, the shared values in ``model``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import asyncpg

from shardpay.config import Settings
from shards.audit.cross import ATTEMPTS, confirmed_cross, totals
from shards.audit.model import CAP, Findings, Money
from shards.audit.shard import scan_shard
from shards.errors import TRANSIENT
from shards.router import SlotMap

__all__ = ["CAP", "audit"]


async def audit(settings: Settings) -> dict[str, Any]:
    """Check every ledger rule on every shard; the report's ``ok`` is False if any rule is broken anywhere."""
    control = await asyncpg.connect(settings.control_dsn, timeout=settings.db_timeout)
    try:
        slots = await SlotMap.load(control)
    finally:
        await control.close()
    conns: list[asyncpg.Connection | None] = []
    try:
        for dsn in settings.shard_dsns:
            conns.append(await _connect(dsn, settings))
        return await _audit(conns, slots)
    finally:
        for conn in conns:
            if conn is not None:
                await conn.close()


async def _connect(dsn: str, settings: Settings) -> asyncpg.Connection | None:
    """A connection, or None if the shard stays unreachable for a few tries (a full server is busy, not down)."""
    # As many tries as the cross-shard rules get passes: one shared patience for a busy shard.
    for attempt in range(ATTEMPTS):
        try:
            return await asyncpg.connect(dsn, timeout=settings.db_timeout)
        except TRANSIENT:
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(0.5)
    return None


async def _audit(conns: list[asyncpg.Connection | None], slots: SlotMap) -> dict[str, Any]:
    findings = Findings()
    findings.checked["shards"] = len(conns)
    live = [(index, conn) for index, conn in enumerate(conns) if conn is not None]
    for index in (index for index, conn in enumerate(conns) if conn is None):
        findings.add("shard_unavailable", index, "unreachable: nothing on it was checked")
    views = await asyncio.gather(*(scan_shard(index, conn, findings) for index, conn in live))
    credited: Money = defaultdict(int)
    if len(live) == len(conns):
        # Every shard answered: the cross-shard rules need them all.
        cross, credited = await confirmed_cross([conn for _, conn in live], slots)
        findings.merge(cross)
    return {
        "ok": not findings.counts,
        "shards": len(conns),
        "violations": findings.listed,
        "violation_counts": dict(findings.counts),
        "totals": totals(views, credited, findings),
        "checked": dict(findings.checked),
    }
