"""Each kind of malformed settlement file is refused with its line number and the bad value (exit status 2), and
nothing from it is fixed or stored: its good lines before the bad one change nothing either."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from pspsim.money import fee
from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, new_wallet
from tests.integration.payments.flows import order, pay, payment_method
from tests.integration.reconcile.conftest import control_fetch, reconcile, today
from tests.integration.reconcile.traffic import fee_booked, shard_of, status_of

HEADER = "psp_reference,reference,type,amount,currency,fee,status,settled_at"
NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")

# name -> (the text after the header and the good line, the line named, the bad value shown)
BAD: dict[str, tuple[str, int, str]] = {
    "a short line": ("ch_b,po_x,charge,100,USD\n", 3, "ch_b,po_x,charge,100,USD"),
    "a truncated file": ("ch_b,po_x,charge,10", 3, "ch_b,po_x,charge,10"),
    "an unknown currency": (f"ch_b,po_x,charge,100,XYZ,0,settled,{NOW}\n", 3, "XYZ"),
    "a non-integer amount": (f"ch_b,po_x,charge,12.50,USD,0,settled,{NOW}\n", 3, "12.50"),
    "a negative fee": (f"ch_b,po_x,charge,100,USD,-3,settled,{NOW}\n", 3, "-3"),
    "a bad date": ("ch_b,po_x,charge,100,USD,0,settled,2026-02-30T10:00:00.000Z\n", 3, "2026-02-30T10:00:00.000Z"),
    "a line of another day": (f"ch_b,po_x,charge,100,USD,0,settled,{YESTERDAY}\n", 3, YESTERDAY[:10]),
    "an unknown status": (f"ch_b,po_x,charge,100,USD,0,pending,{NOW}\n", 3, "pending"),
    "an unknown type": (f"ch_b,po_x,dispute,100,USD,0,settled,{NOW}\n", 3, "dispute"),
}


async def _processing_order(client: httpx.AsyncClient, shards: Shards, executor: Executor) -> tuple[str, int]:
    """An order that stays 'processing' (no executor to charge it): a settlement line for it would complete it."""
    target = await new_wallet(client, shards)
    executor.stop()
    created = await pay(client, await payment_method(client), order(target, 2500))
    return created["orders"][0]["id"], 2500


def _good_line(order_id: str, amount: int) -> str:
    return f"ch_good,{order_id},charge,{amount},USD,{fee(amount, 'USD')},settled,{NOW}\n"


async def _stored_runs(settings: Settings) -> int:
    rows = await control_fetch(settings, "SELECT count(*) AS n FROM reconcile_runs")
    return int(rows[0]["n"])


@pytest.mark.parametrize("kind", list(BAD))
async def test_a_malformed_file_names_its_line_and_changes_nothing(
    kind: str, rc_client: httpx.AsyncClient, rc_shards: Shards, rc_executor: Executor, rc_env: dict[str, str],
    rc_settings: Settings, tmp_path: Path,
) -> None:  # fmt: skip
    order_id, amount = await _processing_order(rc_client, rc_shards, rc_executor)
    try:
        tail, line, value = BAD[kind]
        path = tmp_path / "settlement.csv"
        path.write_text(HEADER + "\n" + _good_line(order_id, amount) + tail)
        runs = await _stored_runs(rc_settings)
        ran = await reconcile(rc_env, str(path), "--date", today().isoformat())
        assert ran.code == 2, (kind, ran.out, ran.err)
        error = ran.out["error"]
        assert error["type"] == "malformed_file" and error["line"] == line, error
        assert value in error["value"] and f"line {line}" in error["message"] and value in ran.err, error
        assert await status_of(rc_shards, order_id) == "processing"
        assert await fee_booked(rc_shards, order_id) is None
        assert await _stored_runs(rc_settings) == runs
    finally:
        rc_executor.start()


@pytest.mark.parametrize(("text", "line", "value"), [
    ("psp_reference,reference,type,amount,currency,fee,status\n", 1, "psp_reference,reference,type,amount"),
    ("", 1, ""),
])  # fmt: skip
async def test_a_bad_header_or_an_empty_file_is_line_1(
    text: str, line: int, value: str, rc_migrated: Settings, rc_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "settlement.csv"
    path.write_text(text)
    ran = await reconcile(rc_env, str(path))
    assert ran.code == 2 and ran.out["error"]["line"] == line and value in ran.out["error"]["value"], ran.out


async def test_the_same_file_without_its_bad_line_completes_the_order(
    rc_client: httpx.AsyncClient, rc_shards: Shards, rc_executor: Executor, rc_env: dict[str, str], tmp_path: Path
) -> None:
    """The control for the tests above: their good line does complete the order once the file is whole."""
    order_id, amount = await _processing_order(rc_client, rc_shards, rc_executor)
    try:
        path = tmp_path / "settlement.csv"
        path.write_text(HEADER + "\n" + _good_line(order_id, amount))
        ran = await reconcile(rc_env, str(path), "--date", today().isoformat())
        assert ran.code in (0, 1), (ran.out, ran.err)
        assert [r["reference"] for r in ran.out["fixed_records"]] == [order_id]
        assert await status_of(rc_shards, order_id) == "succeeded"
        assert await fee_booked(rc_shards, order_id) == fee(amount, "USD")
        assert shard_of(rc_shards, order_id) == ran.out["fixed_records"][0]["shard"]
    finally:
        rc_executor.start()


@pytest.mark.parametrize(("args", "named"), [
    (["--date", "2026-02-30"], "2026-02-30"), (["--date", "yesterday"], "yesterday"),
    (["no-such-file.csv"], "no-such-file.csv"), ([], "FILE"), (["--daily", "--date", "2026-01-01"], "--daily"),
])  # fmt: skip
async def test_bad_arguments_are_exit_status_2(
    args: list[str], named: str, rc_migrated: Settings, rc_env: dict[str, str]
) -> None:
    ran = await reconcile(rc_env, *args)
    assert ran.code == 2 and named in ran.err, (args, ran.out, ran.err)
