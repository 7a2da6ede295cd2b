"""The money movements the simulator really makes: charges, refunds and payouts, each with its webhook.

Each ``*_work`` runs inside ``idem.once``'s transaction. A pending movement stores the outcome it will settle to
(``planned_status``) and when (``settle_at``); ``timers`` settles it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from pspsim import cards, events, render
from pspsim.db import Conn
from pspsim.faults import Faults, rolls
from pspsim.http import invalid

_INSERT = """
INSERT INTO movements (id, type, reference, idempotency_key, amount, currency, status, failure_code,
                       payment_method, charge, destination, planned_status, planned_code, settle_at, dispute_at,
                       settled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
        CASE WHEN $7 = 'pending' THEN now() + $14::interval END,
        now() + $14::interval + $15::interval,
        CASE WHEN $7 = 'pending' THEN NULL ELSE now() END)
RETURNING *
"""


async def _insert(conn: Conn, faults: Faults, fields: dict[str, Any], outcome: tuple[str, str | None],
                  pending: bool, disputed_later: bool = False) -> dict[str, Any]:  # fmt: skip
    """Insert a movement that ends in ``outcome``, now or (``pending``) at ``settle_after_ms``; queue its
    webhook if it is final already."""
    status, code = ("pending", None) if pending else outcome
    planned = outcome if pending else (None, None)
    settle = timedelta(milliseconds=faults.settle_after_ms if pending else 0)
    dispute = timedelta(milliseconds=faults.dispute_after_ms) if disputed_later else None
    row = await conn.fetchrow(
        _INSERT, render.new_id(fields["prefix"]), fields["type"], fields["reference"], fields["key"],
        fields["amount"], fields["currency"], status, code, fields.get("payment_method"), fields.get("charge"),
        fields.get("destination"), planned[0], planned[1], settle, dispute,
    )  # fmt: skip
    assert row is not None
    obj = render.movement(row)
    if not pending:
        await events.enqueue(conn, events.final_type(obj), obj, faults)
    return obj


async def charge(conn: Conn, faults: Faults, params: dict[str, Any]) -> dict[str, Any]:
    behaviour = await conn.fetchval("SELECT behaviour FROM payment_methods WHERE id = $1", params["payment_method"])
    if behaviour is None:
        raise invalid("payment_method", f"No such payment method: '{params['payment_method']}'.", "resource_missing")
    outcome = cards.charge_outcome(behaviour)
    if rolls(faults.decline_rate):
        outcome = ("failed", cards.DECLINED)
    disputed_later = behaviour == cards.DISPUTED_LATER and outcome[0] == "succeeded"
    fields = {**params, "prefix": "ch", "type": "charge"}
    return await _insert(conn, faults, fields, outcome, rolls(faults.pending_rate), disputed_later)


async def refund(conn: Conn, faults: Faults, params: dict[str, Any]) -> dict[str, Any]:
    """Refund part or all of a succeeded charge, never more than it has left: the charge's row lock makes
    concurrent refunds of one charge take turns."""
    row = await conn.fetchrow("SELECT * FROM movements WHERE id = $1 AND type = 'charge' FOR UPDATE", params["charge"])
    if row is None:
        raise invalid("charge", f"No such charge: '{params['charge']}'.", "resource_missing")
    if row["status"] != "succeeded":
        raise invalid("charge", f"Charge '{row['id']}' is {row['status']}: only a succeeded charge can be refunded.",
                      "charge_not_refundable")  # fmt: skip
    left = row["amount"] - row["refunded"]
    amount = params.get("amount", left)
    if left == 0:
        raise invalid("charge", f"Charge '{row['id']}' has already been refunded in full.", "charge_already_refunded")
    if amount > left:
        raise invalid("amount", f"Refund amount ({amount}) is greater than the unrefunded amount of charge "
                      f"'{row['id']}' ({left}).", "amount_too_large")  # fmt: skip
    outcome = ("failed", "declined") if rolls(faults.refund_failure_rate) else ("succeeded", None)
    if outcome[0] == "succeeded":
        await conn.execute("UPDATE movements SET refunded = refunded + $2 WHERE id = $1", row["id"], amount)
    fields = {**params, "amount": amount, "currency": row["currency"], "prefix": "rf", "type": "refund"}
    return await _insert(conn, faults, fields, outcome, pending=False)


async def payout(conn: Conn, faults: Faults, params: dict[str, Any]) -> dict[str, Any]:
    outcome = cards.payout_outcome(params["destination"])
    fields = {**params, "prefix": "pyo", "type": "payout"}
    return await _insert(conn, faults, fields, outcome, rolls(faults.pending_rate))


async def find(pool: asyncpg.Pool, kind: str, key: str) -> dict[str, Any] | None:
    """The ``kind`` (charge, refund, payout) made under ``key``, or None."""
    row = await pool.fetchrow("SELECT * FROM movements WHERE type = $1 AND idempotency_key = $2", kind, key)
    return None if row is None else render.movement(row)


_RECORDS = """
SELECT m.*, coalesce(k.calls, 0) AS calls FROM movements m
LEFT JOIN idem_keys k ON k.endpoint = m.type || 's' AND k.key = m.idempotency_key
WHERE ($1::text IS NULL OR m.type = $1) AND ($2::text IS NULL OR m.reference = $2)
ORDER BY m.created, m.id
"""


async def records(pool: asyncpg.Pool, kind: str | None, reference: str | None) -> list[dict[str, Any]]:
    return [render.record(row) for row in await pool.fetch(_RECORDS, kind, reference)]
