"""The settlement file: one line per movement final that UTC day, fees by currency, the lies of
``/sim/settlement-faults`` (stable across fetches), and thousands of lines streamed."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime

import asyncpg
import httpx
import pytest

from psp.base import Psp, PspUnavailable
from tests.conftest import key
from tests.integration.psp.flows import pay, set_faults

HEADER = "psp_reference,reference,type,amount,currency,fee,status,settled_at"


async def _file(adapter: Psp, day: date) -> list[dict[str, str]]:
    lines = [line async for line in adapter.settlement_file(day)]
    assert lines[0] == HEADER
    return list(csv.DictReader(lines))


def _today() -> date:
    return datetime.now(UTC).date()


async def test_the_days_movements_with_fees_and_statuses(adapter: Psp, http: httpx.AsyncClient) -> None:
    card = await pay(adapter)
    usd = await adapter.charge(card, 10_000, "USD", "po_usd", key())
    jpy = await adapter.charge(card, 5_000, "JPY", "po_jpy", key())
    kwd = await adapter.charge(card, 12_345, "KWD", "po_kwd", key())
    declined = await adapter.charge(await pay(adapter, "4000000000000002"), 999, "USD", "po_no", key())
    refund = await adapter.refund(usd.id, 2_500, "re_1", key())
    paid = await adapter.payout(3_000, "EUR", "ba_1", "out_1", key())
    closed = await adapter.payout(3_000, "EUR", "ba_1fail", "out_2", key())
    await set_faults(http, pending_rate=1, settle_after_ms=60_000)
    await adapter.charge(card, 1, "USD", "po_pending", key())  # not final: not in the file
    rows = {r["reference"]: r for r in await _file(adapter, _today())}
    assert set(rows) == {"po_usd", "po_jpy", "po_kwd", "po_no", "re_1", "out_1", "out_2"}
    # 2.9% rounded half up, plus 30 cents / 30 yen / 300 fils.
    assert (rows["po_usd"]["fee"], rows["po_jpy"]["fee"], rows["po_kwd"]["fee"]) == ("320", "175", "658")
    assert rows["po_usd"] | {"settled_at": ""} == {
        "psp_reference": usd.id, "reference": "po_usd", "type": "charge", "amount": "10000", "currency": "USD",
        "fee": "320", "status": "settled", "settled_at": "",
    }  # fmt: skip
    assert rows["po_jpy"]["psp_reference"] == jpy.id and rows["po_kwd"]["psp_reference"] == kwd.id
    assert (rows["po_no"]["psp_reference"], rows["po_no"]["status"], rows["po_no"]["fee"]) == (declined.id, "failed",
                                                                                                "0")  # fmt: skip
    assert (rows["re_1"]["type"], rows["re_1"]["amount"], rows["re_1"]["status"]) == ("refund", "2500", "settled")
    assert rows["re_1"]["psp_reference"] == refund.id
    assert (rows["out_1"]["psp_reference"], rows["out_1"]["status"]) == (paid.id, "settled")
    assert (rows["out_2"]["psp_reference"], rows["out_2"]["status"]) == (closed.id, "failed")
    settled_at = datetime.fromisoformat(rows["po_usd"]["settled_at"])
    assert rows["po_usd"]["settled_at"].endswith("Z") and settled_at.date() == _today()
    assert await _file(adapter, date(2001, 1, 1)) == []


async def test_settlement_faults_make_the_file_lie_the_same_way_every_time(
    adapter: Psp, http: httpx.AsyncClient
) -> None:
    card = await pay(adapter)
    charges = [await adapter.charge(card, 1_000 + n, "USD", f"po_lie{n}", key()) for n in range(4)]
    day = _today().isoformat()
    lies = {"date": day, "omit": ["po_lie0"], "alter_amount": {charges[1].id: 1}, "duplicate": ["po_lie2"],
            "unknown": 3}  # fmt: skip
    assert (await http.post("/sim/settlement-faults", json=lies)).status_code == 200
    first = await _file(adapter, _today())
    assert first == await _file(adapter, _today())  # two fetches agree
    references = [r["reference"] for r in first]
    assert "po_lie0" not in references and references.count("po_lie2") == 2 and references.count("po_lie3") == 1
    assert next(r for r in first if r["reference"] == "po_lie1")["amount"] == "1"
    unknown = [r for r in first if not r["reference"].startswith("po_lie")]
    assert len(unknown) == 3 and all(len(r["reference"]) == 27 and r["reference"].startswith("po_") for r in unknown)
    assert all(r["type"] == "charge" and r["status"] == "settled" for r in unknown)
    # Replaced, not added to; and a reset forgets it.
    await http.post("/sim/settlement-faults", json={"date": day, "unknown": 1})
    assert len(await _file(adapter, _today())) == 5
    await http.post("/sim/reset")
    assert await _file(adapter, _today()) == []


@pytest.mark.parametrize(
    ("body", "param"),
    [({"date": "2026-02-30"}, "date"), ({"date": "yesterday"}, "date"), ({"date": "2026-01-01", "unknown": -1},
     "unknown"), ({"date": "2026-01-01", "omit": "po_1"}, "omit"),
     ({"date": "2026-01-01", "alter_amount": {"po_1": 1.5}}, "alter_amount")],
)  # fmt: skip
async def test_bad_settlement_faults_are_400(http: httpx.AsyncClient, body: dict[str, object], param: str) -> None:
    response = await http.post("/sim/settlement-faults", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


async def test_a_bad_date_is_400(adapter: Psp, http: httpx.AsyncClient) -> None:
    for bad in ("2026-13-01", "2026-W01-1", "20260101"):
        response = await http.get(f"/v1/settlements/{bad}.csv")
        assert response.status_code == 400 and response.json()["error"]["param"] == "date", bad


async def test_thousands_of_lines_stream_through_the_adapter(
    adapter: Psp, db: asyncpg.Connection, http: httpx.AsyncClient
) -> None:
    # Seeded straight into the simulator's table: 5,000 settled charges through the API would take a minute.
    await db.execute("""
        INSERT INTO movements (id, type, reference, idempotency_key, amount, currency, status, settled_at)
        SELECT 'ch_seed' || n, 'charge', 'po_seed' || n, 'seed-' || n, n, 'USD', 'succeeded',
               '2026-03-04 00:00:00+00'::timestamptz + n * interval '10 ms'
        FROM generate_series(1, 5000) AS n
    """)
    count = total = 0
    async for line in adapter.settlement_file(date(2026, 3, 4)):
        if line != HEADER:
            count += 1
            total += int(line.split(",")[3])
    assert (count, total) == (5000, 5000 * 5001 // 2)
    await set_faults(http, outage=True)
    with pytest.raises(PspUnavailable):
        [line async for line in adapter.settlement_file(date(2026, 3, 4))]
