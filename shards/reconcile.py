"""Reconciliation on one shard, set-wise: the settlement lines that name this shard's objects are staged in a
temporary table (``recon_lines``), compared with its orders, payouts and refunds into another
(``recon_result``: one row per record, each in one category), and read back in pages.

Both tables live on the reconciler's own connection and vanish with it: a run that stops halfway (a malformed
file, a crash) leaves nothing behind. What a run changes for good goes through the normal finishing functions
(the fixes, ``shardpay.services.reconcile.fix``) and ``sp_book_fees``, each its own short transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

import asyncpg

COLUMNS = ("line_no", "psp_reference", "reference", "type", "amount", "currency", "fee", "status", "settled_at")
_CREATE = """
CREATE TEMP TABLE recon_lines (
    line_no integer NOT NULL, psp_reference text NOT NULL, reference text NOT NULL, type text NOT NULL,
    amount bigint NOT NULL, currency text NOT NULL, fee bigint NOT NULL, status text NOT NULL,
    settled_at timestamptz NOT NULL
)
"""
# A record of this shard by type and id, whatever day it became final (a lateral probe of one primary key).
_RECORD = """
    SELECT id, amount, currency, status, final_at FROM payment_orders WHERE {type} = 'charge' AND id = {id}
    UNION ALL SELECT id, amount, currency, status, final_at FROM payouts WHERE {type} = 'payout' AND id = {id}
    UNION ALL SELECT id, amount, currency, status, final_at FROM refunds WHERE {type} = 'refund' AND id = {id}
"""
# The file's vocabulary for a final record's status.
_SETTLED_AS = "CASE {status} WHEN 'failed' THEN 'failed' ELSE 'settled' END"
# A near-midnight record missing from its day's file is most likely in the next day's.
MIDNIGHT_WINDOW = "15 minutes"

# $1, $2: the day's bounds, $3 the day. Every line's (reference, type) is one record: its first line's values, how
# many lines; every record of this shard that became final that day and has no line is one more (matched if it
# failed, or if another day's file settled it; missing at the PSP if not).
_RESULT = """
CREATE TEMP TABLE recon_result (
    reference text NOT NULL, type text NOT NULL, category text NOT NULL, fixed boolean NOT NULL,
    lines integer NOT NULL, line_no integer, psp_reference text, psp_amount bigint, psp_currency text,
    psp_fee bigint, psp_status text, settled_at timestamptz, our_amount bigint, our_currency text,
    our_status text, final_at timestamptz, fee_booked boolean NOT NULL, note text
)
"""
_COMPARE = f"""
INSERT INTO recon_result
WITH g AS MATERIALIZED (
    SELECT DISTINCT ON (reference, type) reference, type, line_no, psp_reference, amount AS psp_amount,
           currency AS psp_currency, fee AS psp_fee, status AS psp_status, settled_at,
           count(*) OVER (PARTITION BY reference, type) AS lines
    FROM recon_lines ORDER BY reference, type, line_no
), seen AS (
    SELECT g.*, o.amount AS our_amount, o.currency AS our_currency, o.status AS our_status, o.final_at
    FROM g LEFT JOIN LATERAL ({_RECORD.format(type="g.type", id="g.reference")}) o ON true
), day AS (
    SELECT 'charge' AS type, id, amount, currency, status, final_at FROM payment_orders
        WHERE final_at >= $1 AND final_at < $2
    UNION ALL SELECT 'payout', id, amount, currency, status, final_at FROM payouts
        WHERE final_at >= $1 AND final_at < $2
    UNION ALL SELECT 'refund', id, amount, currency, status, final_at FROM refunds
        WHERE final_at >= $1 AND final_at < $2
)
SELECT reference, type,
       CASE WHEN our_status IS NULL THEN 'unknown_reference'
            WHEN lines > 1 THEN 'duplicate_at_psp'
            WHEN psp_currency <> our_currency THEN 'currency_mismatch'
            WHEN psp_amount <> our_amount THEN 'amount_mismatch'
            WHEN our_status = 'processing' THEN 'missing_internal'
            WHEN psp_status <> {_SETTLED_AS.format(status="our_status")} THEN 'status_mismatch'
            ELSE 'matched' END AS category,
       false AS fixed, lines::integer AS lines, line_no, psp_reference, psp_amount, psp_currency, psp_fee,
       psp_status, settled_at, our_amount, our_currency, our_status, final_at, false AS fee_booked,
       CASE WHEN final_at < $1 OR final_at >= $2
            THEN 'final in shardpay on ' || to_char(final_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') END AS note
FROM seen
UNION ALL
SELECT d.id, d.type, CASE WHEN d.status = 'failed' OR s.day IS NOT NULL THEN 'matched' ELSE 'missing_at_psp' END,
       false, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.amount, d.currency, d.status, d.final_at, false,
       CASE WHEN s.day IS NOT NULL THEN 'settled in the PSP''s file of ' || s.day::text || ' as ' || s.psp_reference
            WHEN d.status <> 'failed' AND d.final_at >= $2 - interval '{MIDNIGHT_WINDOW}'
            THEN 'final ' || ceil(extract(epoch FROM $2 - d.final_at))::bigint
                 || ' s before the day ended: the PSP may have settled it after midnight (see the next day''s run)'
       END
FROM day d
LEFT JOIN settlement_seen s ON s.reference = d.id AND s.type = d.type AND s.day <> $3
WHERE NOT EXISTS (SELECT 1 FROM g WHERE g.reference = d.id AND g.type = d.type)
"""
# Records matched (or completed) from this file that became final in shardpay on another day: remembered, so that
# their own day's run knows the PSP did settle them. $1 the file's day, $2, $3 its bounds.
_SEEN = """
INSERT INTO settlement_seen (reference, type, day, psp_reference)
SELECT reference, type, $1, psp_reference FROM recon_result
WHERE category IN ('matched', 'missing_internal') AND psp_reference IS NOT NULL AND our_status <> 'processing'
  AND (final_at < $2 OR final_at >= $3)
ORDER BY reference, type
ON CONFLICT (reference, type) DO NOTHING
"""

_TO_FIX = """
SELECT reference, type, psp_reference, psp_status FROM recon_result
WHERE category = 'missing_internal' AND NOT fixed AND (reference, type) > ($1, $2)
ORDER BY reference, type LIMIT $3
"""
# After a page of fixes: a record this run completed stays missing_internal (fixed); one that someone else made
# final meanwhile is matched if it agrees with the line, a status_mismatch if not.
_FIXED = f"""
UPDATE recon_result r
SET fixed = x.applied, our_status = o.status, final_at = o.final_at,
    category = CASE WHEN x.applied OR o.status = 'processing' THEN 'missing_internal'
                    WHEN r.psp_status = {_SETTLED_AS.format(status="o.status")} THEN 'matched'
                    ELSE 'status_mismatch' END,
    note = CASE WHEN x.applied THEN 'completed as ' || o.status || ' from the settlement line'
                WHEN o.status <> 'processing' THEN 'made final meanwhile by someone else, as ' || o.status END
FROM unnest($1::text[], $2::text[], $3::boolean[]) AS x (reference, type, applied)
CROSS JOIN LATERAL ({_RECORD.format(type="x.type", id="x.reference")}) o
WHERE r.reference = x.reference AND r.type = x.type
"""
# A fee is booked for a settled line that agrees with shardpay's final record of it: whatever else is wrong with a
# line (another amount, currency or outcome, a reference of nobody's) is for review first.
_BOOK_FEES = """
WITH due AS (
    SELECT array_agg(reference ORDER BY reference, type) AS refs,
           array_agg(type ORDER BY reference, type) AS types,
           array_agg(psp_reference ORDER BY reference, type) AS psp,
           array_agg(psp_fee ORDER BY reference, type) AS fees,
           array_agg(psp_currency ORDER BY reference, type) AS currencies
    FROM recon_result
    WHERE psp_status = 'settled' AND psp_fee > 0 AND psp_amount = our_amount AND psp_currency = our_currency
      AND our_status IN ('succeeded', 'paid')
), booked AS (
    SELECT f.* FROM due, sp_book_fees(due.refs, due.types, due.psp, due.fees, due.currencies, $1) f
)
UPDATE recon_result r SET fee_booked = true FROM booked b WHERE r.reference = b.r_reference AND r.type = b.r_type
"""
_STATS = """
SELECT category, coalesce(psp_currency, our_currency) AS currency, count(*) AS records,
       coalesce(sum(lines), 0) AS lines, coalesce(sum(psp_amount), 0) AS psp_amount,
       coalesce(sum(our_amount), 0) AS our_amount, count(*) FILTER (WHERE fixed) AS fixed,
       count(*) FILTER (WHERE fee_booked) AS fee_lines, coalesce(sum(psp_fee) FILTER (WHERE fee_booked), 0) AS fees,
       count(*) FILTER (WHERE category = 'matched' AND note IS NOT NULL) AS other_day
FROM recon_result GROUP BY 1, 2
"""
ITEM_COLUMNS = (
    "reference", "type", "category", "fixed", "lines", "line_no", "psp_reference", "psp_amount", "psp_currency",
    "psp_fee", "psp_status", "settled_at", "our_amount", "our_currency", "our_status", "final_at", "fee_booked",
    "note",
)  # fmt: skip
# What a run keeps: every record that is not plainly matched.
ITEMS = f"SELECT {', '.join(ITEM_COLUMNS)} FROM recon_result WHERE category <> 'matched' OR note IS NOT NULL"


async def open_staging(conn: asyncpg.Connection) -> None:
    await conn.execute(_CREATE)


async def stage(conn: asyncpg.Connection, records: Iterable[Sequence[object]]) -> None:
    """Lines (as ``Line.record()``), by COPY."""
    await conn.copy_records_to_table("recon_lines", records=records, columns=COLUMNS)


async def compare(conn: asyncpg.Connection, day: date, start: datetime, end: datetime) -> None:
    """Fill ``recon_result`` for ``day``, [start, end)."""
    # Temporary tables are never analysed by autovacuum: without statistics the planner would guess.
    await conn.execute("ANALYZE recon_lines")
    await conn.execute(_RESULT)
    await conn.execute(_COMPARE, start, end, day)
    await conn.execute("CREATE INDEX ON recon_result (reference, type)")
    await conn.execute("ANALYZE recon_result")


async def to_fix(conn: asyncpg.Connection, after: tuple[str, str], limit: int) -> list[asyncpg.Record]:
    """The next page of records to complete (missing_internal, not yet fixed), after ``after``."""
    return await conn.fetch(_TO_FIX, after[0], after[1], limit)


async def mark_fixed(conn: asyncpg.Connection, keys: Sequence[tuple[str, str]], applied: Sequence[bool]) -> None:
    await conn.execute(_FIXED, [k[0] for k in keys], [k[1] for k in keys], list(applied))


async def remember_other_days(conn: asyncpg.Connection, day: date, start: datetime, end: datetime) -> None:
    await conn.execute(_SEEN, day, start, end)


async def book_fees(conn: asyncpg.Connection, day: date) -> None:
    """Book the fees due (``sp_book_fees``, its own transaction) and mark the lines booked now."""
    await conn.execute(_BOOK_FEES, day)


async def stats(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per category and currency: records, lines, both sides' amounts, fixes, fees booked now, other-day matches."""
    return await conn.fetch(_STATS)
