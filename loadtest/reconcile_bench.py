"""The reconciliation benchmark (``make bench-reconcile``): a settlement file of 100,000 lines against 100,000
records over 4 shards, reconciled by ``shardpay reconcile FILE`` as an operator runs it; its time and peak
memory, and the same for a file of 10,000 lines, to show that memory does not grow with the file.

It uses databases of its own (``shardpay_rbench_*``, dropped and made again) and no other process: the records
are written straight into the shards, set-wise, as the finishing functions would have left them (orders credited
from PSP clearing, refunds and payouts sent), so the audit afterwards is the real check; the file is what the
PSP would send for them, with a few of its lies (omitted, altered, duplicated lines, unknown charges).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

from pspsim.money import fee
from shardpay.config import Settings
from shards.audit import audit
from shards.migrate import migrate

WALLETS = 100
LIES = 10  # lines omitted, altered and duplicated, and unknown charges added, each

# One shard's records of a day, as the finishing functions leave them: $1 shard, $2 shard count, $3 orders,
# $4 refunds, $5 payouts, $6 the day (final_at spread over it), $7 a tag that keeps ids apart between days.
_SEED = f"""
WITH w AS (
    INSERT INTO accounts (id, merchant_id, kind, currency)
    SELECT 'wal_' || lpad(to_hex($1 + $2 * (i % 1024)), 4, '0') || substr(md5($7 || 'w' || i), 1, 20),
           'mer_bench', 'wallet', 'USD'
    FROM generate_series(1, {WALLETS}) i RETURNING id
), o AS (
    INSERT INTO payment_orders (id, payment_id, merchant_id, destination, amount, currency, payment_method, status,
                                request_id, created, final_at)
    SELECT 'po_' || lpad(to_hex($1 + $2 * (i % 1024)), 4, '0') || substr(md5($7 || 'o' || i), 1, 20),
           'pay_bench', 'mer_bench', (SELECT id FROM w ORDER BY id OFFSET i % {WALLETS} LIMIT 1),
           1000 + (i * 7919) % 90000, 'USD', 'pm_bench', 'succeeded', 'req_bench', 0,
           $6::date + make_interval(secs => (i * 86399.0 / $3)::int)
    FROM generate_series(1, $3) i RETURNING id, destination, amount, final_at
), r AS (
    INSERT INTO refunds (id, merchant_id, payment_order, wallet, amount, currency, status, idempotency_key,
                         request_id, created, final_at)
    SELECT 're_' || substr(o.id, 4, 4) || substr(md5($7 || 'r' || o.id), 1, 20), 'mer_bench', o.id, o.destination,
           o.amount / 4, 'USD', 'succeeded', 'k_' || o.id, 'req_bench', 0, o.final_at
    FROM (SELECT * FROM o ORDER BY id LIMIT $4) o RETURNING id, payment_order, wallet, amount
), p AS (
    INSERT INTO payouts (id, merchant_id, source, amount, currency, destination, status, idempotency_key, request_id,
                         created, final_at)
    SELECT 'out_' || substr(w.id, 5, 4) || substr(md5($7 || 'p' || i), 1, 20), 'mer_bench', w.id, 100, 'USD',
           'ba_bench', 'paid', 'k_p' || i, 'req_bench', 0, $6::date + make_interval(secs => (i * 86399.0 / $5)::int)
    FROM generate_series(1, $5) i JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM w) w
         ON w.n = i % {WALLETS}
    RETURNING id, source, amount
), moves AS (
    SELECT id AS ref, 'payment_order' AS kind, 'sys_psp_clearing_USD' AS src, destination AS dst, amount FROM o
    UNION ALL SELECT id, 'refund', wallet, 'sys_refunds_in_flight_USD', amount FROM r
    UNION ALL SELECT id, 'refund_sent', 'sys_refunds_in_flight_USD', 'sys_psp_clearing_USD', amount FROM r
    UNION ALL SELECT id, 'payout', source, 'sys_payouts_in_flight_USD', amount FROM p
    UNION ALL SELECT id, 'payout_paid', 'sys_payouts_in_flight_USD', 'sys_psp_clearing_USD', amount FROM p
), txns AS MATERIALIZED (SELECT moves.*, nextval('ledger_txn_seq') AS txn FROM moves), e AS (
    INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref)
    SELECT txn, src, -amount, 'USD', kind, ref FROM txns UNION ALL SELECT txn, dst, amount, 'USD', kind, ref FROM txns
)
SELECT (SELECT count(*) FROM o) + (SELECT count(*) FROM r) + (SELECT count(*) FROM p)
"""
# After the records (a statement does not see its own inserts): wallets' balances and orders' refunded amounts.
_BALANCES = """
UPDATE accounts a SET available = s.total
FROM (SELECT account_id, sum(amount) AS total FROM ledger_entries WHERE account_id LIKE 'wal\\_%' GROUP BY 1) s
WHERE a.id = s.account_id
"""
_REFUNDED = """
UPDATE payment_orders o SET refunded = r.total
FROM (SELECT payment_order, sum(amount) AS total FROM refunds GROUP BY 1) r WHERE r.payment_order = o.id
"""
_DAY_RECORDS = """
SELECT 'charge' AS type, id, amount, final_at FROM payment_orders WHERE final_at::date = $1
UNION ALL SELECT 'refund', id, amount, final_at FROM refunds WHERE final_at::date = $1
UNION ALL SELECT 'payout', id, amount, final_at FROM payouts WHERE final_at::date = $1
"""


async def seed(settings: Settings, day: date, records: int) -> int:
    """``records`` records of ``day`` over the shards: 80% orders, 10% refunds, 10% payouts."""
    shards = settings.shard_count
    per = records // shards
    made = 0
    for shard, dsn in enumerate(settings.shard_dsns):
        conn = await asyncpg.connect(dsn)
        try:
            made += await conn.fetchval(_SEED, shard, shards, per * 8 // 10, per // 10, per - per * 9 // 10, day,
                                        day.isoformat())  # fmt: skip
            await conn.execute(_BALANCES)
            await conn.execute(_REFUNDED)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
    return made


def _line(row: asyncpg.Record) -> list[Any]:
    charge = row["type"] == "charge"
    settled_at = row["final_at"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    charged = fee(row["amount"], "USD") if charge else 0
    return [f"psp_{row['id']}", row["id"], row["type"], row["amount"], "USD", charged, "settled", settled_at]


async def write_file(settings: Settings, day: date, path: str) -> int:
    """The PSP's file for ``day``, with LIES of each kind; how many lines."""
    lines = index = 0
    with open(path, "w", newline="") as out:  # noqa: ASYNC230 (the harness, not the service)
        rows = csv.writer(out, lineterminator="\n")
        rows.writerow(["psp_reference", "reference", "type", "amount", "currency", "fee", "status", "settled_at"])
        for dsn in settings.shard_dsns:
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    async for row in conn.cursor(_DAY_RECORDS, day):
                        lines += _lie(rows, _line(row), index)
                        index += 1
            finally:
                await conn.close()
        for n in range(LIES):
            rows.writerow([f"ch_unknown{n}", f"po_0000{n:020x}", "charge", 500, "USD", 45, "settled",
                           f"{day.isoformat()}T12:00:00.000Z"])  # fmt: skip
    return lines + LIES


def _lie(rows: Any, line: list[Any], index: int) -> int:
    """Record ``index``'s lines: the first LIES records omitted, the next altered, the next twice."""
    if index < LIES:
        return 0
    if index < 2 * LIES:
        line[3] += 1
    rows.writerow(line)
    if 2 * LIES <= index < 3 * LIES:
        rows.writerow(line)
        return 2
    return 1


def reconcile(env: dict[str, str], path: str, day: date, report: str) -> dict[str, Any]:
    """``shardpay reconcile FILE``: its exit status, wall time and peak resident memory (from wait4)."""
    started = time.monotonic()
    with open(report, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shardpay", "reconcile", path, "--date", day.isoformat(),
                                 "--csv", report + ".csv"], env=env, stdout=out)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    with open(report, "rb") as got:
        body = orjson.loads(got.read())
    return {"exit_status": os.waitstatus_to_exitcode(status), "seconds": round(seconds, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "lines": body["lines"], "records": body["records_total"],
            "counts": body["counts"], "fees_booked": body["fees"]["booked"]}  # fmt: skip


async def drop(settings: Settings) -> None:
    admin = await asyncpg.connect(f"{settings.pg_server}/postgres")
    try:
        for dsn in (settings.control_dsn, *settings.shard_dsns):
            await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


async def main(args: argparse.Namespace) -> int:
    env = {**os.environ, "SHARDPAY_DB_PREFIX": args.prefix, "SHARDPAY_SHARDS": str(args.shards)}
    env.pop("SHARDPAY_SHARD_DSNS", None)
    settings = Settings.from_env(env)
    await drop(settings)
    await migrate(settings)
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "shards": args.shards}
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as folder:
        runs = (("small", date(2026, 1, 1), args.lines // 10), ("full", date(2026, 1, 2), args.lines))
        for name, day, records in runs:
            seeded = await seed(settings, day, records)
            path = os.path.join(folder, f"{day}.csv")
            lines = await write_file(settings, day, path)
            results[name] = {"records_seeded": seeded, "file_lines": lines,
                             **reconcile(env, path, day, os.path.join(folder, f"{name}.json"))}  # fmt: skip
    checked = await audit(settings)
    results["audit_ok"] = checked["ok"]
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    ok = checked["ok"] and all(results[n]["exit_status"] == 1 for n in ("small", "full"))  # the lies need review
    return 0 if ok and results["full"]["seconds"] < 60 else 1


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=100_000, help="records (and about as many lines) of the full run")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--prefix", default="shardpay_rbench", help="its databases are <prefix>_control, _shard_<n>")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(_args())))
