"""Records on the two sides of midnight: final in shardpay on one day, settled by the PSP on the next (or completed
by the reconciliation the day after the PSP settled it). The first day's run reports it, the next day's matches it,
and from then on neither day calls it missing at the PSP."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx

from pspsim.money import fee
from shards.pools import Shards
from tests.conftest import Executor, new_wallet
from tests.integration.payments.flows import order, pay, payment_method
from tests.integration.reconcile.conftest import reconcile, today
from tests.integration.reconcile.traffic import paid_order, shard_of, status_of

HEADER = "psp_reference,reference,type,amount,currency,fee,status,settled_at\n"


def _file(folder: Path, name: str, *lines: str) -> str:
    path = folder / name
    path.write_text(HEADER + "".join(lines))
    return str(path)


def _line(order_id: str, amount: int, settled_at: datetime) -> str:
    at = settled_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"ch_{order_id[3:]},{order_id},charge,{amount},USD,{fee(amount, 'USD')},settled,{at}\n"


def _found(report: dict[str, Any], reference: str, section: str = "records") -> dict[str, Any] | None:
    return next((r for r in report[section] if r["reference"] == reference), None)


async def test_a_record_final_just_before_midnight_and_settled_just_after(
    rc_client: httpx.AsyncClient, rc_shards: Shards, rc_executor: Executor, rc_env: dict[str, str], tmp_path: Path
) -> None:
    yesterday = today() - timedelta(days=1)
    _, order_id = await paid_order(rc_client, await new_wallet(rc_client, rc_shards), 1500)
    # As if shardpay had made it final at 23:59:58 yesterday (the tests cannot wait for midnight).
    final_at = datetime.combine(yesterday, time(23, 59, 58), UTC)
    await rc_shards.pool(shard_of(rc_shards, order_id)).execute(
        "UPDATE payment_orders SET final_at = $2 WHERE id = $1", order_id, final_at
    )
    before = await reconcile(rc_env, _file(tmp_path, "y.csv"), "--date", yesterday.isoformat())
    missing = _found(before.out, order_id)
    assert missing is not None and missing["category"] == "missing_at_psp", before.out
    assert "2 s before the day ended" in missing["note"]

    settled = datetime.combine(today(), time(0, 0, 1), UTC)
    after = await reconcile(rc_env, _file(tmp_path, "t.csv", _line(order_id, 1500, settled)), "--date",
                            today().isoformat())  # fmt: skip
    assert _found(after.out, order_id) is None  # matched
    other = _found(after.out, order_id, "settled_on_other_day")
    assert other is not None and other["note"] == f"final in shardpay on {yesterday}", after.out

    again = await reconcile(rc_env, _file(tmp_path, "y.csv"), "--date", yesterday.isoformat())
    assert _found(again.out, order_id) is None
    seen = _found(again.out, order_id, "settled_on_other_day")
    assert seen is not None and seen["note"].startswith(f"settled in the PSP's file of {today()}"), again.out
    changes = {c["reference"]: (c["was"], c["now"]) for c in again.out["changes_since_last_run"]["records"]}
    assert changes[order_id] == ("missing_at_psp", "matched")


async def test_a_record_completed_the_day_after_is_not_missing_on_that_day(
    rc_client: httpx.AsyncClient, rc_shards: Shards, rc_executor: Executor, rc_env: dict[str, str], tmp_path: Path
) -> None:
    yesterday = today() - timedelta(days=1)
    target = await new_wallet(rc_client, rc_shards)
    rc_executor.stop()
    try:
        created = await pay(rc_client, await payment_method(rc_client), order(target, 1700))
        order_id = created["orders"][0]["id"]
        late = datetime.combine(yesterday, time(23, 59, 59, 500_000), UTC)
        fixed = await reconcile(rc_env, _file(tmp_path, "y.csv", _line(order_id, 1700, late)), "--date",
                                yesterday.isoformat())  # fmt: skip
        assert [r["reference"] for r in fixed.out["fixed_records"]] == [order_id], fixed.out
        assert await status_of(rc_shards, order_id) == "succeeded"  # final today, settled yesterday
        next_day = await reconcile(rc_env, _file(tmp_path, "t.csv"), "--date", today().isoformat())
        assert _found(next_day.out, order_id) is None, _found(next_day.out, order_id)
        seen = _found(next_day.out, order_id, "settled_on_other_day")
        assert seen is not None and seen["note"].startswith(f"settled in the PSP's file of {yesterday}")
    finally:
        rc_executor.start()
