"""The audit's rules for money in and out: sound payments, payouts and refunds pass, in flight or final, and each
kind of corruption is named by its rule. On the audit tests' scratch databases, with the money moved by the
shards' own functions (no PSP needed: what the PSP said is what the test says)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest_asyncio

from shardpay import ids
from shardpay.config import Settings
from shards import outflows, payments
from shards.migrate import migrate
from shards.pools import open_shards
from tests.conftest import TEST_PREFIX, drop_databases, stack_env
from tests.integration.test_audit import MERCHANT, Scratch, broken_rules, wallet, without_immutability

NOW = int(time.time())


@pytest_asyncio.fixture(scope="module")
async def scratch() -> AsyncIterator[Scratch]:
    """Scratch databases of this module's own (two shards), made and dropped here, as test_audit.py's."""
    env = stack_env(SHARDPAY_DB_PREFIX=f"{TEST_PREFIX}_audit_io", SHARDPAY_SHARDS="2")
    settings = Settings.from_env(env)
    await drop_databases(settings)
    await migrate(settings)
    async with open_shards(settings, pool_max=4) as shards:
        yield Scratch(env, settings, shards)
    await drop_databases(settings)


async def _order(scratch: Scratch, destination: str, amount: int) -> tuple[asyncpg.Pool, str]:
    """A placed payment order of ``amount`` into ``destination``; its shard's pool and its id."""
    slot = ids.parse(destination, "wal")
    assert slot is not None
    pool = scratch.shards.pool(scratch.shards.index_of(slot))
    order_id = ids.new_id("po", slot)
    placed = {"id": order_id, "payment_id": ids.new_id("pay", slot), "merchant_id": MERCHANT,
              "destination": destination, "amount": amount, "currency": "USD", "reference": None,
              "payment_method": "pm_audit", "request_id": "req_audit", "created": NOW}  # fmt: skip
    assert await payments.place(pool, [placed]) == 1
    return pool, order_id


async def _succeed(pool: asyncpg.Pool, order_id: str) -> None:
    done = await payments.finish_order(pool, order_id, "succeeded", "ch_audit", None, f"evt_{order_id}", "{}")
    assert done.applied


async def _payout(scratch: Scratch, source: str, amount: int) -> tuple[asyncpg.Pool, str]:
    slot = ids.parse(source, "wal")
    assert slot is not None
    pool = scratch.shards.pool(scratch.shards.index_of(slot))
    payout_id = ids.new_id("out", slot)
    request = outflows.NewPayout(MERCHANT, f"k_{payout_id}", "fp", payout_id, source, amount, "USD", "ba_audit",
                                 "req_audit", NOW, "{}", "{}", f"evt_{payout_id}", "{}")  # fmt: skip
    assert (await outflows.create_payout(pool, request)).outcome == "applied"
    return pool, payout_id


async def _refund(pool: asyncpg.Pool, order_id: str, amount: int) -> str:
    slot = ids.parse(order_id, "po")
    assert slot is not None
    refund_id = ids.new_id("re", slot)
    request = outflows.NewRefund(MERCHANT, f"k_{refund_id}", "fp", refund_id, order_id, amount, "req_audit", NOW,
                                 '{"amount": null, "currency": null}', "{}", f"evt_{refund_id}",
                                 '{"data": {"object": {}}}')  # fmt: skip
    assert (await outflows.create_refund(pool, request)).outcome == "applied"
    return refund_id


async def _finish(pool: asyncpg.Pool, kind: str, object_id: str, status: str) -> None:
    _, applied = await outflows.finish(pool, kind, object_id, status, "psp_audit", None, f"evt_f_{object_id}", "{}")
    assert applied


async def test_money_in_and_out_passes_in_flight_and_final(scratch: Scratch) -> None:
    target = await wallet(scratch.shards, 0, funds=1000)
    pool, processing = await _order(scratch, target, 300)
    pool, succeeded = await _order(scratch, target, 500)
    await _succeed(pool, succeeded)
    _, failed = await _order(scratch, target, 70)
    assert (await payments.finish_order(pool, failed, "failed", None, "card_declined", "evt_x", "{}")).applied
    _, paid = await _payout(scratch, target, 100)
    await _finish(pool, "payout", paid, "paid")
    _, returned = await _payout(scratch, target, 50)
    await _finish(pool, "payout", returned, "failed")
    await _payout(scratch, target, 25)  # still processing
    sent = await _refund(pool, succeeded, 40)
    await _finish(pool, "refund", sent, "succeeded")
    await _refund(pool, succeeded, 10)  # still processing
    assert await broken_rules(scratch.settings) == set()
    row = await pool.fetchrow("SELECT available, pending FROM accounts WHERE id = $1", target)
    assert row is not None and (row["available"], row["pending"]) == (1000 + 500 - 100 - 25 - 40 - 10, 300)
    assert processing


async def _broken(scratch: Scratch, pool: asyncpg.Pool, sql: str, *args: Any, undo: str, expected: set[str],
                  undo_args: tuple[Any, ...] = ()) -> None:  # fmt: skip
    await pool.execute(sql, *args)
    try:
        assert await broken_rules(scratch.settings) == expected
    finally:
        await pool.execute(undo, *(undo_args or args))
    assert await broken_rules(scratch.settings) == set()


async def test_each_broken_money_in_and_out_rule_is_named(scratch: Scratch) -> None:
    target = await wallet(scratch.shards, 1, funds=1000)
    pool, order_id = await _order(scratch, target, 200)
    await _succeed(pool, order_id)
    _, open_order = await _order(scratch, target, 60)
    _, payout_id = await _payout(scratch, target, 100)
    await _finish(pool, "payout", payout_id, "paid")
    refund_id = await _refund(pool, order_id, 30)
    # An order marked succeeded that was never credited (its pending left alone too).
    await _broken(
        scratch,
        pool,
        "UPDATE payment_orders SET status = 'succeeded' WHERE id = $1",
        open_order,
        undo="UPDATE payment_orders SET status = 'processing' WHERE id = $1",
        expected={"order_credit", "wallet_pending", "work_queued", "psp_clearing_balance"},
    )
    # Pending that drifted from the processing orders.
    await _broken(
        scratch,
        pool,
        "UPDATE accounts SET pending = pending + 7 WHERE id = $1",
        target,
        undo="UPDATE accounts SET pending = pending - 7 WHERE id = $1",
        expected={"wallet_pending"},
    )
    # A refund's amount that the order's `refunded` does not count.
    await _broken(
        scratch,
        pool,
        "UPDATE payment_orders SET refunded = refunded + 1 WHERE id = $1",
        order_id,
        undo="UPDATE payment_orders SET refunded = refunded - 1 WHERE id = $1",
        expected={"order_refunded"},
    )
    # Processing work that lost its queue row.
    work = await pool.fetchrow("SELECT * FROM psp_work WHERE id = $1", refund_id)
    assert work is not None
    await _broken(
        scratch,
        pool,
        "DELETE FROM psp_work WHERE id = $1",
        refund_id,
        undo="INSERT INTO psp_work (id, kind) VALUES ($1, 'refund')",
        expected={"work_queued"},
    )
    # A second credit of a succeeded order (balanced against clearing, and the wallet's balance left as it was).
    await pool.execute(
        "WITH t AS (SELECT nextval('ledger_txn_seq') AS id) INSERT INTO ledger_entries "
        "(txn_id, account_id, amount, currency, kind, ref) SELECT t.id, a, x, 'USD', 'payment_order', $1 "
        "FROM t, (VALUES ($2, 200), ('sys_psp_clearing_USD', -200)) v (a, x)",
        order_id, target,
    )  # fmt: skip
    try:
        assert await broken_rules(scratch.settings) == {"order_credit", "wallet_balance", "conservation",
                                                        "psp_clearing_balance"}  # fmt: skip
    finally:
        await without_immutability(
            pool, "DELETE FROM ledger_entries WHERE ref = $1 AND kind = 'payment_order' AND txn_id = "
            "(SELECT max(txn_id) FROM ledger_entries WHERE ref = $1 AND kind = 'payment_order')", order_id,
        )  # fmt: skip
    assert await broken_rules(scratch.settings) == set()


async def test_a_payout_settled_and_returned_both_is_caught(scratch: Scratch) -> None:
    target = await wallet(scratch.shards, 0, funds=500)
    pool, payout_id = await _payout(scratch, target, 100)
    await _finish(pool, "payout", payout_id, "paid")
    await pool.execute(
        "WITH t AS (SELECT nextval('ledger_txn_seq') AS id) INSERT INTO ledger_entries "
        "(txn_id, account_id, amount, currency, kind, ref) SELECT t.id, a, x, 'USD', 'payout_return', $1 "
        "FROM t, (VALUES ('sys_payouts_in_flight_USD', -100), ('sys_funding_USD', 100)) v (a, x)",
        payout_id,
    )
    try:
        assert await broken_rules(scratch.settings) == {"payout_entries", "payouts_in_flight_balance"}
        report_rows = [v for v in (await _report(scratch))["violations"] if v["rule"] == "payout_entries"]
        assert report_rows[0]["detail"]["id"] == payout_id
    finally:
        await without_immutability(pool, "DELETE FROM ledger_entries WHERE kind = 'payout_return' AND ref = $1",
                                   payout_id)  # fmt: skip
    assert await broken_rules(scratch.settings) == set()


async def _report(scratch: Scratch) -> dict[str, Any]:
    from shards.audit import audit

    report: dict[str, Any] = orjson.loads(orjson.dumps(await audit(scratch.settings), default=str))
    return report
