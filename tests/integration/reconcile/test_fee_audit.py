"""The audit's fee rules: a fee booked without its ledger transaction is caught, as are the PSP clearing and fee
balances it then breaks."""

from __future__ import annotations

from shardpay.config import Settings
from shards.audit import audit
from shards.pools import Shards
from tests.conftest import audit_clean


async def test_a_fee_booked_without_its_entries_breaks_the_audit(rc_shards: Shards, rc_settings: Settings) -> None:
    pool = rc_shards.pool(1)
    await pool.execute(
        "INSERT INTO settlement_fees (reference, type, psp_reference, amount, currency, day, txn_id) "
        "VALUES ('po_planted', 'charge', 'ch_planted', 59, 'USD', current_date, -1)"
    )
    try:
        report = await audit(rc_settings)
        assert not report["ok"]
        found = {(v["rule"], v["shard"]) for v in report["violations"]}
        assert {("fee_entries", 1), ("psp_clearing_balance", 1), ("psp_fees_balance", 1)} <= found, report
    finally:
        await pool.execute("DELETE FROM settlement_fees WHERE reference = 'po_planted'")
    await audit_clean(rc_settings)
