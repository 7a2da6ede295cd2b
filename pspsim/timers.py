"""What happens later: pending charges and payouts settle at ``settle_at``, 0259 charges are disputed at
``dispute_at``. Both are rows in the database, so a restart of the simulator delays them, never loses them."""

from __future__ import annotations

import asyncio

import asyncpg

from pspsim import events, render
from pspsim.db import UNREACHABLE
from pspsim.state import Sim

POLL = 0.05
BATCH = 100

_SETTLE = """
UPDATE movements SET status = planned_status, failure_code = planned_code, planned_status = NULL,
                     planned_code = NULL, settled_at = now()
WHERE id IN (SELECT id FROM movements WHERE status = 'pending' AND settle_at <= now()
             ORDER BY settle_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING *
"""
_DISPUTE = """
UPDATE movements SET disputed = true
WHERE id IN (SELECT id FROM movements WHERE dispute_at <= now() AND NOT disputed AND status = 'succeeded'
             ORDER BY dispute_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING *
"""


def dispute(row: asyncpg.Record) -> dict[str, object]:
    """The dispute object of ``charge.dispute.created`` (Stripe's shape, with the charge's reference)."""
    return {"id": render.new_id("dp"), "object": "dispute", "charge": row["id"], "amount": row["amount"],
            "currency": row["currency"], "reference": row["reference"], "reason": "fraudulent",
            "status": "needs_response"}  # fmt: skip


async def due(sim: Sim) -> int:
    """Settle and dispute whatever is due, each with its webhook in the same transaction; how many."""
    async with sim.pool.acquire() as conn, conn.transaction():
        settled = await conn.fetch(_SETTLE, BATCH)
        for row in settled:
            obj = render.movement(row)
            await events.enqueue(conn, events.final_type(obj), obj, sim.faults)
        disputed = await conn.fetch(_DISPUTE, BATCH)
        for row in disputed:
            await events.enqueue(conn, "charge.dispute.created", dispute(row), sim.faults)
    if settled or disputed:
        sim.wake.set()
    return len(settled) + len(disputed)


async def run(sim: Sim) -> None:
    """Until cancelled; a database that is down is waited out."""
    while True:
        try:
            busy = await due(sim)
        except UNREACHABLE:
            busy = 0
            await asyncio.sleep(1)
        if not busy:
            await asyncio.sleep(POLL)
