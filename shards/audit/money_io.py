"""Rules about money in and out through the PSP, on one shard, read in the shard scan's snapshot.

Each succeeded payment order is credited exactly once and no other order at all; a wallet's pending is exactly
its processing orders; each payout and refund is debited once, and then either settled or returned exactly once
by its outcome (never both); an order's refunded amount is the sum of its refunds that did not fail; the
in-flight accounts hold exactly what is processing, and psp_clearing exactly what the PSP's outcomes and the fees
it kept put there; each booked fee has exactly one ledger transaction of its amount, and no fee transaction is
without its booking; psp_fees holds exactly the booked fees; and every object still processing has its work
queued, nothing final does.
"""

from __future__ import annotations

from collections import defaultdict

import asyncpg
import orjson

from shards.audit.model import Findings, Money, ShardView

_KINDS = ("payment_order", "payout", "payout_paid", "payout_return", "refund", "refund_sent", "refund_return",
          "psp_fee")  # fmt: skip
# Per object (the entries' ref): how many ledger transactions of each kind, and what reached a wallet. One pass
# over the entries, then hash joins.
_MOVES = (
    "moves AS MATERIALIZED (SELECT ref, "
    + ", ".join(f"count(DISTINCT txn_id) FILTER (WHERE kind = '{kind}') AS {kind}" for kind in _KINDS)
    + ", coalesce(sum(amount) FILTER (WHERE kind = 'payment_order' AND account_id NOT LIKE 'sys\\_%'), 0) "
    "AS credited, coalesce(sum(amount) FILTER (WHERE kind = 'psp_fee' AND account_id LIKE "
    "'sys\\_psp\\_clearing\\_%'), 0) AS fee_to_clearing FROM ledger_entries WHERE kind IN ("
    + ", ".join(f"'{kind}'" for kind in _KINDS)
    + ") GROUP BY ref)"
)


def _moved(alias: str, *kinds: str) -> str:
    return ", ".join(f"coalesce(m.{kind}, 0) AS {kind}" for kind in kinds) + f" FROM {alias} LEFT JOIN moves m"


_RULES: tuple[tuple[str, str, str], ...] = (
    ("order_credit",
     "(SELECT o.id, o.status, o.amount, coalesce(m.credited, 0) AS credited, "
     f"{_moved('payment_orders o', 'payment_order')} ON m.ref = o.id) x",
     "(status = 'succeeded' AND (payment_order <> 1 OR credited <> amount)) "
     "OR (status <> 'succeeded' AND payment_order <> 0)"),
    ("wallet_pending",
     "(SELECT a.id, a.pending, coalesce(p.total, 0) AS processing_orders FROM accounts a LEFT JOIN "
     "(SELECT destination, sum(amount) AS total FROM payment_orders WHERE status = 'processing' GROUP BY 1) p "
     "ON p.destination = a.id WHERE a.kind = 'wallet') x",
     "pending <> processing_orders"),
    ("payout_entries",
     f"(SELECT p.id, p.status, {_moved('payouts p', 'payout', 'payout_paid', 'payout_return')} ON m.ref = p.id) x",
     "payout <> 1 OR payout_paid <> (status = 'paid')::int OR payout_return <> (status = 'failed')::int"),
    ("refund_entries",
     f"(SELECT r.id, r.status, {_moved('refunds r', 'refund', 'refund_sent', 'refund_return')} ON m.ref = r.id) x",
     "refund <> 1 OR refund_sent <> (status = 'succeeded')::int OR refund_return <> (status = 'failed')::int"),
    ("order_refunded",
     "(SELECT o.id, o.refunded, coalesce(r.total, 0) AS refunds FROM payment_orders o LEFT JOIN "
     "(SELECT payment_order, sum(amount) AS total FROM refunds WHERE status <> 'failed' GROUP BY 1) r "
     "ON r.payment_order = o.id) x",
     "refunded <> refunds"),
    ("work_queued",
     "(SELECT id, 'processing without queued work' AS problem FROM (SELECT id FROM payment_orders "
     "WHERE status = 'processing' UNION ALL SELECT id FROM payouts WHERE status = 'processing' UNION ALL "
     "SELECT id FROM refunds WHERE status = 'processing') open WHERE NOT EXISTS "
     "(SELECT 1 FROM psp_work w WHERE w.id = open.id) UNION ALL SELECT w.id, 'work for nothing processing' "
     "FROM psp_work w WHERE NOT EXISTS (SELECT 1 FROM payment_orders o WHERE o.id = w.id AND o.status = "
     "'processing') AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.id = w.id AND p.status = 'processing') "
     "AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.id = w.id AND r.status = 'processing')) x",
     "true"),
    # A booked fee (settlement_fees) is one ledger transaction of its amount into psp_clearing; a fee transaction
    # without its booking is found too (amount NULL).
    ("fee_entries",
     "(SELECT f.reference, f.amount, coalesce(m.psp_fee, 0) AS psp_fee, coalesce(m.fee_to_clearing, 0) AS "
     "fee_to_clearing FROM settlement_fees f LEFT JOIN moves m ON m.ref = f.reference UNION ALL "
     "SELECT m.ref, NULL, m.psp_fee, m.fee_to_clearing FROM moves m WHERE m.psp_fee > 0 AND NOT EXISTS "
     "(SELECT 1 FROM settlement_fees f WHERE f.reference = m.ref)) x",
     "amount IS NULL OR psp_fee <> 1 OR fee_to_clearing <> amount"),
)  # fmt: skip
CAP_SAMPLE = 20
_SUMS = (
    "sums AS (SELECT 'orders' AS what, currency, sum(amount) FILTER (WHERE status = 'succeeded') AS amount "
    "FROM payment_orders GROUP BY currency UNION ALL "
    "SELECT 'payouts_processing', currency, sum(amount) FILTER (WHERE status = 'processing') FROM payouts "
    "GROUP BY currency UNION ALL SELECT 'payouts_paid', currency, sum(amount) FILTER (WHERE status = 'paid') "
    "FROM payouts GROUP BY currency UNION ALL SELECT 'refunds_processing', currency, "
    "sum(amount) FILTER (WHERE status = 'processing') FROM refunds GROUP BY currency UNION ALL "
    "SELECT 'refunds_succeeded', currency, sum(amount) FILTER (WHERE status = 'succeeded') FROM refunds "
    "GROUP BY currency UNION ALL SELECT 'fees', currency, sum(amount) FROM settlement_fees GROUP BY currency)"
)


def _columns(rule: str, source: str, where: str) -> str:
    return (
        f"(SELECT count(*) FROM {source} WHERE {where}) AS {rule}_n, "
        f"(SELECT coalesce(json_agg(y), '[]')::text FROM "
        f"(SELECT * FROM {source} WHERE {where} ORDER BY 1 LIMIT {CAP_SAMPLE}) y) AS {rule}_sample"
    )


QUERY = (
    f"WITH {_MOVES}, {_SUMS} SELECT (SELECT coalesce(json_agg(s), '[]')::text FROM sums s) AS sums, "
    "(SELECT count(*) FROM payment_orders) AS payment_orders, (SELECT count(*) FROM payouts) AS payouts, "
    "(SELECT count(*) FROM refunds) AS refunds, (SELECT count(*) FROM settlement_fees) AS settlement_fees, "
    + ", ".join(_columns(*rule) for rule in _RULES)
)


async def scan(index: int, conn: asyncpg.Connection, findings: Findings) -> asyncpg.Record:
    """Run in the caller's snapshot; returns the row for ``check_accounts``."""
    row = await conn.fetchrow(QUERY)
    assert row is not None
    for rule, _, _ in _RULES:
        findings.add_sample(rule, index, row[f"{rule}_n"], orjson.loads(row[f"{rule}_sample"]))
    findings.checked.update(payment_orders=row["payment_orders"], payouts=row["payouts"], refunds=row["refunds"],
                            settlement_fees=row["settlement_fees"])  # fmt: skip
    return row


def check_accounts(view: ShardView, row: asyncpg.Record, findings: Findings) -> None:
    """In-flight accounts hold what is processing; psp_clearing, the PSP's outcomes (credited orders take from
    it, paid payouts and sent refunds give back) and the fees it kept (booked from its settlement files, which
    give back too: what it owes is less by them); psp_fees, those fees."""
    sums: defaultdict[str, Money] = defaultdict(lambda: defaultdict(int))
    for entry in orjson.loads(row["sums"]):
        sums[entry["what"]][entry["currency"]] += int(entry["amount"] or 0)
    currencies = {currency for _, currency in view.entries} | {c for money in sums.values() for c in money}
    for currency in sorted(currencies):
        expected = {
            "payouts_in_flight": sums["payouts_processing"][currency],
            "refunds_in_flight": sums["refunds_processing"][currency],
            "psp_clearing": sums["payouts_paid"][currency]
            + sums["refunds_succeeded"][currency]
            + sums["fees"][currency]
            - sums["orders"][currency],
            "psp_fees": -sums["fees"][currency],
        }
        for kind, want in expected.items():
            have = view.entries.get((kind, currency), 0)
            if have != want:
                findings.add(f"{kind}_balance", view.index, {"currency": currency, kind: have, "expected": want})
