"""Each fault knob, seen through the adapter as shardpay will see it, against the simulator's own records."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from psp.base import Psp, PspOutcomeUnknown, PspRejected, PspUnavailable
from shardpay.config import Settings
from tests.conftest import key
from tests.integration.psp.conftest import Receiver
from tests.integration.psp.flows import pay, records, set_faults, stats


async def test_error_rate_answers_5xx_and_does_nothing(adapter: Psp, http: httpx.AsyncClient) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, error_rate=1)
    idem = key()
    for _ in range(6):
        with pytest.raises(PspUnavailable):
            await adapter.charge(payment_method, 100, "USD", "po_err", idem)
    answers = await stats(http, "POST /v1/charges")
    assert set(answers) <= {"500", "503"} and sum(answers.values()) == 6
    with pytest.raises(PspUnavailable):
        await adapter.find_charge(idem)
    await set_faults(http, error_rate=0)
    assert await records(http) == [] and await adapter.find_charge(idem) is None
    # The retry with the same key is the one that charges.
    assert (await adapter.charge(payment_method, 100, "USD", "po_err", idem)).status == "succeeded"
    [record] = await records(http)
    assert record["calls"] == 1


async def test_reset_rate_resets_the_connection_and_does_nothing(adapter: Psp, http: httpx.AsyncClient) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, reset_rate=1)
    idem = key()
    # The request went out and the connection was reset: the adapter cannot know that nothing was done.
    with pytest.raises(PspOutcomeUnknown) as unknown:
        await adapter.charge(payment_method, 100, "USD", "po_rst", idem)
    assert isinstance(unknown.value.__cause__, httpx.ReadError | httpx.RemoteProtocolError)
    with pytest.raises(PspUnavailable):
        await adapter.find_charge(idem)  # a read has no outcome to lose
    assert (await stats(http, "POST /v1/charges")) == {"reset": 1}
    await set_faults(http, reset_rate=0)
    assert await records(http) == [] and await adapter.find_charge(idem) is None


async def test_a_raw_reset_is_an_rst_not_a_clean_close(http: httpx.AsyncClient, sim: object) -> None:
    await set_faults(http, reset_rate=1)
    url = http.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"GET /v1/charges?idempotency_key=x HTTP/1.1\r\nHost: sim\r\n\r\n")
    await writer.drain()
    with pytest.raises(ConnectionResetError):
        await reader.read(100)
    writer.close()


async def test_timeout_after_commit_is_an_unknown_outcome_the_key_resolves(
    adapter: Psp, http: httpx.AsyncClient
) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, timeout_after_commit_rate=1, timeout_hold_ms=5000)
    idem = key()
    started = time.monotonic()
    with pytest.raises(PspOutcomeUnknown):
        await adapter.charge(payment_method, 250, "USD", "po_tmo", idem)
    assert 1.9 < time.monotonic() - started < 3.5  # SHARDPAY_PSP_TIMEOUT=2 bounds the call in total
    await set_faults(http, timeout_after_commit_rate=0)
    [record] = await records(http)
    assert record["status"] == "succeeded" and record["idempotency_key"] == idem
    found = await adapter.find_charge(idem)
    assert found is not None and found.id == record["id"]
    assert (await stats(http, "POST /v1/charges")).get("timeout") == 1


async def test_outage_answers_503_to_every_v1_call_counted_apart(adapter: Psp, http: httpx.AsyncClient) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, outage=True)
    for call in (adapter.charge(payment_method, 1, "USD", "po_out", key()), adapter.find_payout("k"),
                 adapter.create_hosted_session(1, "USD", "http://127.0.0.1:9/", "pay_o", key())):  # fmt: skip
        with pytest.raises(PspUnavailable) as down:
            await call
        assert down.value.retry_after == 1.0
    raw = await http.get("/v1/settlements/2026-01-01.csv")
    assert raw.status_code == 503 and raw.json()["error"]["code"] == "outage"
    assert await stats(http, "POST /v1/charges") == {"outage": 1}
    assert (await stats(http, "GET /v1/payouts")) == {"outage": 1}
    await set_faults(http, outage=False)
    assert await records(http) == []


async def test_latency_delays_every_answer(adapter: Psp, http: httpx.AsyncClient) -> None:
    await set_faults(http, latency_ms=400)
    started = time.monotonic()
    assert await adapter.find_charge("k") is None
    assert time.monotonic() - started >= 0.4


async def test_decline_rate_fails_any_card(adapter: Psp, http: httpx.AsyncClient) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, decline_rate=1)
    charge = await adapter.charge(payment_method, 100, "USD", "po_d", key())
    assert (charge.status, charge.failure_code) == ("failed", "card_declined")


async def test_pending_charge_and_payout_settle_later_by_webhook(
    adapter: Psp, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, pending_rate=1, settle_after_ms=300)
    idem = key()
    charge = await adapter.charge(payment_method, 100, "USD", "po_p", idem)
    payout = await adapter.payout(100, "USD", "ba_x", "out_p", key())
    failing = await adapter.payout(100, "USD", "ba_xfail", "out_f", key())
    assert (charge.status, payout.status, failing.status) == ("pending", "pending", "pending")
    assert receiver.events("charge.succeeded") == []
    [hook] = await receiver.wait_for(1, "charge.succeeded")
    assert hook["data"]["object"]["id"] == charge.id
    await receiver.wait_for(1, "payout.paid")
    [closed] = await receiver.wait_for(1, "payout.failed")
    assert closed["data"]["object"]["failure_code"] == "account_closed"
    settled = await adapter.find_charge(idem)
    assert settled is not None and settled.status == "succeeded"
    assert {r["status"] for r in await records(http)} == {"succeeded", "paid", "failed"}


async def test_refund_failure_rate_fails_the_refund_and_keeps_the_capture(adapter: Psp, http: httpx.AsyncClient,
                                                                          receiver: Receiver) -> None:  # fmt: skip
    charge = await adapter.charge(await pay(adapter), 100, "USD", "po_rf", key())
    await set_faults(http, refund_failure_rate=1)
    refund = await adapter.refund(charge.id, 100, "re_rf", key())
    assert refund.status == "failed" and refund.failure_code
    await receiver.wait_for(1, "refund.failed")
    await set_faults(http, refund_failure_rate=0)
    assert (await adapter.refund(charge.id, 100, "re_rf2", key())).status == "succeeded"


@pytest.mark.parametrize(
    ("faults", "field"),
    [({"error_rate": 1.5}, "error_rate"), ({"reset_rate": -0.1}, "reset_rate"), ({"latency_ms": "slow"}, "latency_ms"),
     ({"outage": 1}, "outage"), ({"no_such_knob": 1}, "no_such_knob"), ({"pending_rate": True}, "pending_rate")],
)  # fmt: skip
async def test_bad_fault_values_are_400_naming_the_field(http: httpx.AsyncClient, faults: dict[str, object],
                                                         field: str) -> None:  # fmt: skip
    before = (await http.get("/sim/faults")).json()
    response = await http.put("/sim/faults", json={"decline_rate": 0.5, **faults})
    assert response.status_code == 400 and response.json()["error"]["param"] == field
    assert field in response.json()["error"]["message"]
    assert (await http.get("/sim/faults")).json() == before  # nothing half applied


async def test_faults_merge_and_reset_forgets_them(http: httpx.AsyncClient) -> None:
    await set_faults(http, decline_rate=0.25)
    merged = await set_faults(http, latency_ms=5)
    assert merged["decline_rate"] == 0.25 and merged["latency_ms"] == 5
    assert (await http.post("/sim/reset")).status_code == 200
    assert (await http.get("/sim/faults")).json()["decline_rate"] == 0


async def test_refused_charge_is_a_rejection_not_an_outage(adapter: Psp) -> None:
    with pytest.raises(PspRejected) as refused:
        await adapter.charge("pm_doesnotexist", 100, "USD", "po_x", key())
    assert refused.value.code == "resource_missing" and refused.value.param == "payment_method"


async def test_its_database_down_is_503_then_it_recovers(adapter: Psp, http: httpx.AsyncClient,
                                                         psp_settings: Settings) -> None:  # fmt: skip
    payment_method = await pay(adapter)
    name = psp_settings.psp_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(f"{psp_settings.pg_server}/postgres")
    body = {"payment_method": payment_method, "amount": 1, "currency": "USD", "reference": "po_db"}
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        response = await http.post("/v1/charges", json=body, headers={"Idempotency-Key": key()})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "database_unavailable"
        with pytest.raises(PspUnavailable):
            await adapter.find_charge("k")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert (await adapter.charge(payment_method, 1, "USD", "po_db", key())).status == "succeeded"
