"""Every call and look-up of PSP.md through the adapter, the hosted page as a browser uses it, and bad input."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from psp.base import Charge, Psp, PspRejected, SessionCompleted
from tests.conftest import key
from tests.integration.psp.conftest import Receiver, SimProcess
from tests.integration.psp.flows import RETURN_URL, eventually, pay, records


async def test_hosted_session_same_nonce_same_session(adapter: Psp) -> None:
    nonce = key()
    first = await adapter.create_hosted_session(1234, "USD", RETURN_URL, "pay_1", nonce)
    again = await adapter.create_hosted_session(1234, "USD", RETURN_URL, "pay_1", nonce)
    assert first == again and first.id.startswith("hs_") and first.url.endswith(f"/pay/{first.token}")
    with pytest.raises(PspRejected) as refused:
        await adapter.create_hosted_session(999, "USD", RETURN_URL, "pay_1", nonce)
    assert refused.value.status == 400 and refused.value.code == "idempotency_key_reused"


async def test_hosted_page_tokenizes_redirects_and_sends_the_webhook(
    adapter: Psp, receiver: Receiver, sim: SimProcess
) -> None:
    session = await adapter.create_hosted_session(1234, "EUR", RETURN_URL, "pay_page", key())
    async with httpx.AsyncClient(timeout=10) as browser:
        form = await browser.get(session.url)
        assert form.status_code == 200 and "12.34 EUR" in form.text and 'name="card_number"' in form.text
        bad = await browser.post(session.url, data={"card_number": "4242424242424241"})
        assert bad.status_code == 400 and "not valid" in bad.text and 'name="card_number"' in bad.text
        paid = await browser.post(session.url, data={"card_number": "4242 4242 4242 4242"})
        assert paid.status_code == 303
        location = paid.headers["location"]
        assert location.startswith("http://127.0.0.1:9/checkout/done?order=42&session=" + session.id)
        payment_method = location.rsplit("payment_method=", 1)[1]
        # Paid once: paying again answers the same card, it does not mint a second pm_.
        again = await browser.post(session.url, data={"card_number": "4000000000000002"})
        assert again.status_code == 303 and again.headers["location"] == location
        assert (await browser.get(f"{sim.url}/pay/tok_nonexistent")).status_code == 404
    [hook] = await receiver.wait_for(1, "hosted_session.completed")
    raw = next(r for r in receiver.received if r.event["id"] == hook["id"])
    event = adapter.verify_webhook(raw.headers["psp-signature"], raw.body, time.time())
    assert event.object == SessionCompleted(session.id, payment_method, "pay_page", 1234, "EUR")
    assert "4242424242424242" not in raw.body.decode() and hook["data"]["object"]["card"]["last4"] == "4242"


@pytest.mark.parametrize(
    ("card", "status", "code"),
    [
        ("4242424242424242", "succeeded", None),
        ("4000000000000002", "failed", "card_declined"),
        ("4000000000009995", "failed", "insufficient_funds"),
        ("5555555555554444", "succeeded", None),  # any other Luhn-valid number behaves like 4242
    ],
)
async def test_test_cards_decide_the_charge_and_its_webhook(
    adapter: Psp, receiver: Receiver, card: str, status: str, code: str | None
) -> None:
    payment_method = await pay(adapter, card)
    idem = key()
    charge = await adapter.charge(payment_method, 500, "USD", "po_card", idem)
    assert (charge.status, charge.failure_code, charge.amount, charge.payment_method) == (status, code, 500,
                                                                                          payment_method)  # fmt: skip
    assert await adapter.find_charge(idem) == charge
    [hook] = await receiver.wait_for(1, f"charge.{status}")
    assert hook["data"]["object"]["id"] == charge.id and hook["data"]["object"]["failure_code"] == code


async def test_a_saved_card_is_charged_again_under_each_key(adapter: Psp) -> None:
    payment_method = await pay(adapter)
    charges = [await adapter.charge(payment_method, 100 + n, "USD", f"po_{n}", key()) for n in range(3)]
    assert len({c.id for c in charges}) == 3 and all(c.status == "succeeded" for c in charges)


async def test_card_0259_succeeds_then_is_disputed(adapter: Psp, receiver: Receiver, http: httpx.AsyncClient) -> None:
    await http.put("/sim/faults", json={"dispute_after_ms": 200})
    payment_method = await pay(adapter, "4000000000000259")
    charge = await adapter.charge(payment_method, 700, "GBP", "po_disputed", key())
    assert charge.status == "succeeded"
    [hook] = await receiver.wait_for(1, "charge.dispute.created")
    raw = next(r for r in receiver.received if r.event["id"] == hook["id"])
    dispute = adapter.verify_webhook(raw.headers["psp-signature"], raw.body, time.time()).object
    assert dispute is not None and getattr(dispute, "charge", None) == charge.id
    [record] = await records(http, type="charge")
    assert record["disputed"] is True


async def test_refunds_partial_then_the_rest_then_no_more(adapter: Psp, receiver: Receiver) -> None:
    charge = await adapter.charge(await pay(adapter), 1000, "USD", "po_r", key())
    part = await adapter.refund(charge.id, 300, "re_1", key())
    assert (part.status, part.amount, part.currency, part.charge) == ("succeeded", 300, "USD", charge.id)
    rest = await adapter.refund(charge.id, None, "re_2", key())
    assert rest.amount == 700
    with pytest.raises(PspRejected) as refused:
        await adapter.refund(charge.id, 1, "re_3", key())
    assert refused.value.code == "charge_already_refunded"
    await receiver.wait_for(2, "refund.succeeded")


async def test_refund_over_captured_or_of_a_failed_charge_is_refused(adapter: Psp) -> None:
    charge = await adapter.charge(await pay(adapter), 1000, "USD", "po_o", key())
    with pytest.raises(PspRejected) as over:
        await adapter.refund(charge.id, 1001, "re_o", key())
    assert (over.value.status, over.value.code, over.value.param) == (400, "amount_too_large", "amount")
    failed = await adapter.charge(await pay(adapter, "4000000000000002"), 1000, "USD", "po_f", key())
    with pytest.raises(PspRejected) as not_captured:
        await adapter.refund(failed.id, 10, "re_f", key())
    assert not_captured.value.code == "charge_not_refundable"


async def test_payouts_paid_or_account_closed(adapter: Psp, receiver: Receiver) -> None:
    idem = key()
    paid = await adapter.payout(5000, "JPY", "ba_123", "out_1", idem)
    assert (paid.status, paid.failure_code, paid.destination) == ("paid", None, "ba_123")
    assert await adapter.find_payout(idem) == paid
    closed = await adapter.payout(5000, "USD", "ba_999fail", "out_2", key())
    assert (closed.status, closed.failure_code) == ("failed", "account_closed")
    assert len(await receiver.wait_for(1, "payout.paid")) == 1 and len(await receiver.wait_for(1, "payout.failed"))


async def test_lookups_of_unknown_keys_are_none(adapter: Psp) -> None:
    assert await adapter.find_charge("never-used") is None
    assert await adapter.find_refund("never-used") is None
    assert await adapter.find_payout("never-used") is None


async def test_refund_lookup_finds_it(adapter: Psp) -> None:
    charge: Charge = await adapter.charge(await pay(adapter), 1000, "USD", "po_l", key())
    idem = key()
    made = await adapter.refund(charge.id, 10, "re_l", idem)
    assert await adapter.find_refund(idem) == made


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/charges", {"payment_method": "pm_x", "amount": 10.5, "currency": "USD", "reference": "r"}, "amount"),
        ("/v1/charges", {"payment_method": "pm_x", "amount": "10", "currency": "USD", "reference": "r"}, "amount"),
        ("/v1/charges", {"payment_method": "pm_x", "amount": 0, "currency": "USD", "reference": "r"}, "amount"),
        ("/v1/charges", {"payment_method": "pm_x", "amount": 10, "currency": "XXX", "reference": "r"}, "currency"),
        ("/v1/charges", {"payment_method": "pm_x", "amount": 10, "currency": "USD"}, "reference"),
        ("/v1/charges", {"payment_method": "pm_unknown", "amount": 10, "currency": "USD", "reference": "r"},
         "payment_method"),
        ("/v1/charges", {"payment_method": "card_1", "amount": 10, "currency": "USD", "reference": "r"},
         "payment_method"),
        ("/v1/refunds", {"charge": "ch_unknown", "amount": 10, "reference": "r"}, "charge"),
        ("/v1/payouts", {"amount": 10, "currency": "USD", "destination": "acct_1", "reference": "r"}, "destination"),
        ("/v1/payouts", {"amount": True, "currency": "USD", "destination": "ba_1", "reference": "r"}, "amount"),
        ("/v1/hosted_sessions", {"amount": 10, "currency": "USD", "return_url": "ftp://x", "reference": "r"},
         "return_url"),
    ],
)  # fmt: skip
async def test_bad_input_is_400_naming_the_field(http: httpx.AsyncClient, path: str, body: dict[str, object],
                                                 param: str) -> None:  # fmt: skip
    response = await http.post(path, json=body, headers={"Idempotency-Key": key()})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param and response.json()["error"]["type"] == "invalid_request_error"
    assert await records(http) == []


async def test_missing_key_bad_json_auth_and_unknown_paths(http: httpx.AsyncClient, sim: SimProcess) -> None:
    body = {"amount": 10, "currency": "USD", "destination": "ba_1", "reference": "r"}
    missing = await http.post("/v1/payouts", json=body)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "idempotency_key_missing"
    bad_json = await http.post("/v1/payouts", content=b"{nope", headers={"Idempotency-Key": key()})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    async with httpx.AsyncClient(base_url=sim.url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer sk_wrong"}):
            refused = await anonymous.get("/v1/charges?idempotency_key=k", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    unknown = await http.get("/v1/nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "resource_missing"
    wrong_method = await http.delete("/v1/charges")
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["allow"]
    no_key = await http.get("/v1/charges")
    assert no_key.status_code == 400 and no_key.json()["error"]["param"] == "idempotency_key"


async def test_request_id_travels_and_each_call_logs_one_line_without_secrets(
    adapter: Psp, sim: SimProcess, psp_settings: object
) -> None:
    await pay(adapter, "4242424242424242")
    await adapter.find_charge("k-logged", request_id="req_trace_me")

    log = Path(sim.log_path)

    async def logged() -> list[str]:
        text = await asyncio.to_thread(log.read_text)
        return [line for line in text.splitlines() if "req_trace_me" in line]

    [line] = await eventually(logged)
    assert '"endpoint":"GET /v1/charges"' in line and '"status":"404"' in line
    text = await asyncio.to_thread(log.read_text)
    assert "4242424242424242" not in text and "sk_sim_test" not in text and "whsec_sim_test" not in text


async def test_odd_input_anywhere_is_a_4xx_never_a_500(http: httpx.AsyncClient, sim: SimProcess) -> None:
    session = {"amount": 1, "currency": "USD", "return_url": "http://[::1", "reference": "r"}
    charge = {"payment_method": "pm_x", "amount": 1, "currency": "USD", "reference": "a\x00"}
    answers = [
        await http.get("/v1/charges", params={"idempotency_key": "\x00"}),
        await http.post("/v1/hosted_sessions", json=session, headers={"Idempotency-Key": key()}),
        await http.post("/v1/charges", json=charge, headers={"Idempotency-Key": key()}),
        await http.get("/pay/%00"),
        await http.post("/pay/%00", data={"card_number": "4242424242424242"}),
        await http.get("/sim/records", params={"type": "coupon"}),
        await http.get("/sim/records", params={"reference": "\x00"}),
        await http.get("/sim/events", params={"type": "\x00"}),
        await http.post("/sim/settlement-faults", json={"date": "2026-01-01", "omit": ["\x00"]}),
        await http.post("/sim/settlement-faults", json={"date": "2026-01-01", "alter_amount": {"\x00": 1}}),
        await http.put("/sim/faults", json={"\x00": 1}),
        await http.post("/v1/payouts", content=b"x" * 70_000, headers={"Idempotency-Key": key()}),
    ]
    assert [a.status_code for a in answers] == [400, 400, 400, 404, 404, 400, 400, 400, 400, 400, 400, 413]
    stats = (await http.get("/sim/stats")).json()["endpoints"]
    assert not any(code.startswith("5") for e in stats.values() for code in e["answers"])
