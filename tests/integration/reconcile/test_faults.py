"""A day of traffic with faults injected at the PSP simulator, reconciled against its own settlement file: every
record lands in its category, what can be fixed is fixed once (through the normal finishing step: ledger,
event, payment), a second run and two runs at once fix nothing more, fees are booked once, the audit is clean."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from pspsim.money import fee
from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import Executor, audit_clean, new_wallet
from tests.integration.payments.flows import DECLINED_CARD, final, wallet
from tests.integration.reconcile.conftest import control_fetch, reconcile, today
from tests.integration.reconcile.traffic import (
    LOST_WEBHOOKS,
    events,
    fee_booked,
    ledger_txns,
    paid_order,
    payout,
    refund,
    status_of,
    unfinished_order,
    until_settled_at_psp,
)  # fmt: skip


def _by_reference(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["reference"]: r for r in report["records"]}


async def _lost_webhooks(client: httpx.AsyncClient, shards: Shards, sim: httpx.AsyncClient,
                         wallets: list[str], source: str) -> tuple[list[str], list[str], str]:  # fmt: skip
    """Charges and a payout the PSP settled (two succeeded, one declined) while every webhook was dropped:
    (payment ids, order ids, payout id), all still 'processing' in shardpay."""
    assert (await sim.put("/sim/faults", json=LOST_WEBHOOKS)).status_code == 200
    made = [await unfinished_order(client, shards, wallets[1], 1100),
            await unfinished_order(client, shards, wallets[2], 1200),
            await unfinished_order(client, shards, wallets[3], 1300, card=DECLINED_CARD)]  # fmt: skip
    out = await payout(client, source, 700)
    for reference in [o for _, o in made] + [out]:
        await until_settled_at_psp(sim, reference)
    assert (await sim.put("/sim/faults", json={"pending_rate": 0, "webhook_drop_rate": 0})).status_code == 200
    for reference in [o for _, o in made] + [out]:
        assert await status_of(shards, reference) == "processing"
    return [p for p, _ in made], [o for _, o in made], out


async def test_a_day_with_faults_lands_each_record_in_its_category_and_fixes_once(
    rc_client: httpx.AsyncClient, rc_shards: Shards, rc_executor: Executor, sim: httpx.AsyncClient,
    rc_env: dict[str, str], rc_settings: Settings, tmp_path: Any,
) -> None:  # fmt: skip
    client, shards = rc_client, rc_shards
    wallets = [await new_wallet(client, shards, shard=n) for n in range(4)]
    source = await new_wallet(client, shards, funds=10_000, shard=3)
    _, good = await paid_order(client, wallets[0], 1000)
    _, refunded = await paid_order(client, wallets[1], 2000)
    _, altered = await paid_order(client, wallets[2], 3000)
    _, omitted = await paid_order(client, wallets[3], 4000)
    _, declined = await paid_order(client, wallets[0], 500, card=DECLINED_CARD)
    doubled = await refund(client, refunded, 300)
    paid_out = await payout(client, source, 900)
    failed_out = await payout(client, source, 800, bank="ba_closed_fail")
    for path in (f"/v1/payouts/{paid_out}", f"/v1/payouts/{failed_out}"):
        await final(client, path)
    payments, lost, lost_payout = await _lost_webhooks(client, shards, sim, wallets, source)
    lies = {"date": today().isoformat(), "omit": [omitted], "alter_amount": {altered: 3333}, "duplicate": [doubled],
            "unknown": 2}  # fmt: skip
    assert (await sim.post("/sim/settlement-faults", json=lies)).status_code == 200

    sheet = tmp_path / "finance.csv"
    first = await reconcile(rc_env, "--date", today().isoformat(), "--csv", str(sheet))
    assert first.code == 1, (first.out, first.err)
    report, found = first.out, _by_reference(first.out)
    assert {r: found[r]["category"] for r in (omitted, altered, doubled, *lost, lost_payout)} == {
        omitted: "missing_at_psp", altered: "amount_mismatch", doubled: "duplicate_at_psp",
        lost[0]: "missing_internal", lost[1]: "missing_internal", lost[2]: "missing_internal",
        lost_payout: "missing_internal",
    }  # fmt: skip
    for reference in (good, refunded, declined, paid_out, failed_out):
        assert reference not in found, found[reference]  # matched
    unknown = [r for r in report["records"] if r["category"] == "unknown_reference"]
    assert len(unknown) == 2 and all(r["shardpay"] is None and r["psp"]["status"] == "settled" for r in unknown)
    assert found[altered]["psp"]["amount"] == 3333 and found[altered]["shardpay"]["amount"] == 3000
    assert found[doubled]["psp"]["lines"] == 2
    assert found[omitted]["psp"] is None and found[omitted]["shardpay"]["status"] == "succeeded"
    assert {r["reference"] for r in report["fixed_records"]} == {*lost, lost_payout}
    assert all(found[r]["fixed"] for r in (*lost, lost_payout))
    assert report["counts"]["missing_internal"] == report["fixed"] == 4
    # Five of ours need review (other tests of this stack may leave theirs in the same day's file).
    review = sum(n for category, n in report["counts"].items() if category not in ("matched", "missing_internal"))
    assert report["needs_review"] == review >= 5 and report["exit_status"] == 1
    logged = [line for line in _json_lines(first.err) if line["event"] == "reconcile.run"]
    assert len(logged) == 1 and logged[0]["counts"] == report["counts"] and logged[0]["run"] == report["id"]

    await _fixed_once(client, shards, payments, lost, lost_payout, wallets)
    # Fees: booked for each settled charge that agrees with its record, fixed ones included; none for the altered
    # line nor for the failed ones.
    for reference, amount in ((good, 1000), (refunded, 2000), (omitted, None), (lost[0], 1100), (lost[1], 1200)):
        assert await fee_booked(shards, reference) == (None if amount is None else fee(amount, "USD"))
    for reference in (altered, declined, lost[2], doubled, paid_out):
        assert await fee_booked(shards, reference) is None
    lines = sheet.read_text().splitlines()
    assert lines[0].startswith("run,date,category,fixed,reference") and len(lines) == 1 + len(report["records"])
    await audit_clean(rc_settings)

    second = await reconcile(rc_env, "--date", today().isoformat())
    assert second.code == 1 and second.out["fixed"] == 0 and second.out["fixed_records"] == []
    assert second.out["fees"]["booked"] == {}
    changes = second.out["changes_since_last_run"]
    assert changes["previous_run"] == report["id"]
    assert {c["reference"]: (c["was"], c["now"]) for c in changes["records"]} == {
        r: ("missing_internal", "matched") for r in (*lost, lost_payout)
    }
    assert changes["counts"] == {"matched": 4, "missing_internal": -4}
    await _fixed_once(client, shards, payments, lost, lost_payout, wallets)
    history = await reconcile(rc_env, "--history", "--date", today().isoformat())
    assert [run["id"] for run in history.out["data"]][:2] == [second.out["id"], report["id"]]
    await audit_clean(rc_settings)


async def _fixed_once(client: httpx.AsyncClient, shards: Shards, payments: list[str], lost: list[str],
                      lost_payout: str, wallets: list[str]) -> None:  # fmt: skip
    """The lost-webhook records completed exactly as the webhook would have: once."""
    assert [await status_of(shards, o) for o in lost] == ["succeeded", "succeeded", "failed"]
    assert await status_of(shards, lost_payout) == "paid"
    for order_id, status in zip(lost, ("succeeded", "succeeded", "failed"), strict=True):
        assert await events(shards, order_id, f"payment_order.{status}") == 1
        assert await ledger_txns(shards, order_id, "payment_order") == (status == "succeeded")
    assert await events(shards, lost_payout, "payout.paid") == 1
    assert await ledger_txns(shards, lost_payout, "payout_paid") == 1
    statuses = [(await client.get(f"/v1/payments/{p}")).json()["status"] for p in payments]
    assert statuses == ["succeeded", "succeeded", "failed"]
    assert (await wallet(client, wallets[1]))["available"] == 2000 - 300 + 1100
    assert (await wallet(client, wallets[3]))["pending"] == 0


async def test_two_runs_at_once_fix_each_record_once(
    rc_client: httpx.AsyncClient, rc_shards: Shards, rc_executor: Executor, sim: httpx.AsyncClient,
    rc_env: dict[str, str], rc_settings: Settings,
) -> None:  # fmt: skip
    client, shards = rc_client, rc_shards
    wallets = [await new_wallet(client, shards, shard=n) for n in range(4)]
    source = await new_wallet(client, shards, funds=5_000, shard=0)
    _, lost, lost_payout = await _lost_webhooks(client, shards, sim, wallets, source)
    day = today().isoformat()
    runs = await asyncio.gather(reconcile(rc_env, "--date", day), reconcile(rc_env, "--date", day))
    assert all(r.out is not None and r.code in (0, 1) for r in runs), [(r.code, r.err) for r in runs]
    fixed = [f["reference"] for r in runs for f in r.out["fixed_records"]]
    assert sorted(fixed) == sorted([*lost, lost_payout])  # each once, by one run or the other
    earlier, later = sorted(runs, key=lambda r: int(r.out["id"]))
    # Serialised by the day's lock: the later run starts from what the earlier one fixed.
    assert later.out["fixed"] == 0 and later.out["changes_since_last_run"]["previous_run"] == earlier.out["id"]
    for order_id, status in zip(lost, ("succeeded", "succeeded", "failed"), strict=True):
        assert await status_of(shards, order_id) == status
        assert await events(shards, order_id, f"payment_order.{status}") == 1
        assert await ledger_txns(shards, order_id, "payment_order") == (status == "succeeded")
        assert await ledger_txns(shards, order_id, "psp_fee") == (status == "succeeded")
    assert await events(shards, lost_payout, "payout.paid") == 1
    stored = await control_fetch(rc_settings, "SELECT id, fixed FROM reconcile_runs WHERE id = ANY($1::bigint[])",
                                 [r.out["id"] for r in runs])  # fmt: skip
    assert sum(row["fixed"] for row in stored) == 4
    await audit_clean(rc_settings)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
