"""The PSP simulator's pure rules and the adapter's parsing and webhook checks, on fakes (no server)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import httpx
import orjson
import pytest

import psp
from events.signing import sign
from psp.base import Charge, InvalidSignature, PspMalformed, PspOutcomeUnknown, PspRejected, PspUnavailable
from psp.simulator import SimulatorPsp
from pspsim import cards, faults, settlement
from pspsim.calls import endpoint
from pspsim.money import fee
from pspsim.sender import next_try
from shardpay.config import ConfigError, Settings


@pytest.mark.parametrize(
    ("number", "valid"),
    [("4242424242424242", True), ("4000000000000002", True), ("4000000000009995", True),
     ("4000000000000259", True), ("5555555555554444", True), ("4242424242424241", False), ("42424242", False),
     ("4242a24242424242", False), ("", False), ("٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", False)],
)  # fmt: skip
def test_luhn(number: str, valid: bool) -> None:
    assert cards.luhn_valid(number) is valid


def test_tokenize_keeps_last4_brand_and_behaviour_only() -> None:
    assert cards.tokenize("4000 0000 0000 0002") == cards.Card("0002", "visa", cards.DECLINED)
    assert cards.tokenize("5555-5555-5555-4444") == cards.Card("4444", "mastercard", cards.SUCCEEDS)
    assert cards.tokenize("4000000000000259") == cards.Card("0259", "visa", cards.DISPUTED_LATER)
    assert cards.tokenize("1234") is None
    assert cards.charge_outcome(cards.INSUFFICIENT_FUNDS) == ("failed", "insufficient_funds")
    assert cards.charge_outcome(cards.DISPUTED_LATER) == ("succeeded", None)
    assert cards.payout_outcome("ba_12fail") == ("failed", "account_closed")
    assert cards.payout_outcome("ba_failsafe") == ("paid", None)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [(10_000, "USD", 320), (1, "USD", 30), (17, "EUR", 30), (18, "EUR", 31), (5_000, "JPY", 175),
     (12_345, "KWD", 658), (10**15, "USD", 29 * 10**12 + 30)],
)  # fmt: skip
def test_fee_is_29_per_mille_half_up_plus_a_fixed_part(amount: int, currency: str, expected: int) -> None:
    assert fee(amount, currency) == expected


def test_fault_merge_validates_every_field_and_applies_all_or_nothing() -> None:
    merged = faults.merge(faults.Faults(), {"error_rate": 0.5, "outage": True, "latency_ms": 20})
    assert (merged.error_rate, merged.outage, merged.latency_ms, merged.decline_rate) == (0.5, True, 20.0, 0.0)
    for patch, field in (({"error_rate": 2}, "error_rate"), ({"outage": "yes"}, "outage"), ({"x": 1}, "x"),
                         ({"latency_ms": float("nan")}, "latency_ms"), ({"latency_ms": -1}, "latency_ms"),
                         ({"reset_rate": None}, "reset_rate")):  # fmt: skip
        with pytest.raises(faults.FaultError) as bad:
            faults.merge(merged, patch)
        assert bad.value.field == field and repr(patch[field])[:3] in str(bad.value)
    with pytest.raises(faults.FaultError):
        faults.merge(merged, [1])
    assert faults.from_stored({"decline_rate": 0.1, "gone_knob": 3}).decline_rate == 0.1


class FixedDice:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_rolls() -> None:
    assert not faults.rolls(0, FixedDice(0.0)) and faults.rolls(1, FixedDice(0.999))
    assert faults.rolls(0.5, FixedDice(0.49)) and not faults.rolls(0.5, FixedDice(0.5))


def test_backoff_schedule_then_given_up() -> None:
    assert next_try(1, (1.0, 10.0), 0.1) == pytest.approx(1.1)
    assert next_try(2, (1.0, 10.0), -0.2) == pytest.approx(8.0)
    assert next_try(3, (1.0, 10.0), 0) is None
    assert sum(Settings().psp_webhook_backoff) / 86_400 == pytest.approx(2.99, abs=0.01)  # three days


def _row(ref: str, psp_ref: str, kind: str = "charge", status: str = "succeeded") -> dict[str, Any]:
    return {"id": psp_ref, "reference": ref, "type": kind, "amount": 1000, "currency": "USD", "status": status,
            "settled_at": datetime(2026, 1, 2, 3, 4, 5, 678000, UTC)}  # fmt: skip


def test_settlement_lines_and_lies() -> None:
    assert settlement.line(_row("po_1", "ch_1")) == ("ch_1", "po_1", "charge", "1000", "USD", "59", "settled",
                                                     "2026-01-02T03:04:05.678Z")  # fmt: skip
    assert settlement.line(_row("re_1", "rf_1", "refund"))[5:7] == ("0", "settled")
    assert settlement.line(_row("out_1", "pyo_1", "payout", "failed"))[5:7] == ("0", "failed")
    lies = settlement.Lies(frozenset({"po_1"}), {"ch_2": 5}, frozenset({"po_3"}), 2)
    assert settlement.lie(lies, _row("po_1", "ch_1")) == []
    assert settlement.lie(lies, _row("po_2", "ch_2"))[0][3] == "5"
    assert len(settlement.lie(lies, _row("po_3", "ch_3"))) == 2
    first = settlement.unknown_lines(date(2026, 1, 2), 3)
    assert first == settlement.unknown_lines(date(2026, 1, 2), 3) != settlement.unknown_lines(date(2026, 1, 3), 3)
    assert all(line[1].startswith("po_0") and len(line[1]) == 27 for line in first)
    with pytest.raises(ValueError):
        settlement.parse_day("2026-W01-1")


def test_endpoint_labels_are_a_bounded_set() -> None:
    assert endpoint("POST", "/v1/charges") == "POST /v1/charges"
    assert endpoint("GET", "/v1/settlements/2026-01-01.csv") == "GET /v1/settlements/{date}.csv"
    assert endpoint("POST", "/pay/tok_abc") == "POST /pay/{token}"
    assert endpoint("GET", "/v1/anything/else") == endpoint("GET", "/etc/passwd") == "GET other"


SECRET = "whsec_unit"


def _adapter(handler: Any = None) -> SimulatorPsp:
    settings = Settings(psp_webhook_secret=SECRET, psp_url="http://psp.invalid", psp_timeout=1)
    return SimulatorPsp(settings, httpx.MockTransport(handler) if handler else None)


def _event(**overrides: Any) -> bytes:
    obj = {"id": "ch_1", "object": "charge", "status": "succeeded", "failure_code": None, "amount": 5,
           "currency": "USD", "reference": "po_1", "payment_method": "pm_1"}  # fmt: skip
    return orjson.dumps({"id": "pspevt_1", "type": "charge.succeeded", "created": 1, "data": {"object": obj},
                         **overrides})  # fmt: skip


def test_verify_webhook_good_bad_stale() -> None:
    adapter, body, now = _adapter(), _event(), time.time()
    event = adapter.verify_webhook(sign(SECRET, body, int(now)), body, now)
    assert (event.id, event.type) == ("pspevt_1", "charge.succeeded")
    assert event.object == Charge("ch_1", "succeeded", None, 5, "USD", "po_1", "pm_1")
    bad = (
        sign("whsec_other", body, int(now)),
        sign(SECRET, body + b" ", int(now)),
        sign(SECRET, body, int(now) - 301),
        None,
        "t=1,v1=zz",
        "",
    )
    for header in bad:
        with pytest.raises(InvalidSignature):
            adapter.verify_webhook(header, body, now)
    assert adapter.verify_webhook(sign(SECRET, body, int(now) - 299), body, now).id == "pspevt_1"


def test_a_signed_but_malformed_webhook_is_malformed_and_an_unknown_type_has_no_object() -> None:
    adapter, now = _adapter(), time.time()
    for body in (b"not json", _event(data={"object": {"id": "ch_1"}}), _event(created="1"), b"[]"):
        with pytest.raises(PspMalformed):
            adapter.verify_webhook(sign(SECRET, body, int(now)), body, now)
    odd = _event(type="customer.created", data={"object": {}})
    assert adapter.verify_webhook(sign(SECRET, odd, int(now)), odd, now).object is None


def _answer(status: int, body: Any) -> Any:
    return lambda request: httpx.Response(status, content=orjson.dumps(body) if body is not None else b"{")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [(200, None, PspMalformed), (200, {"id": "ch_1"}, PspMalformed), (200, [1], PspMalformed),
     (201, {"id": "ch_1", "status": "charged", "amount": 5}, PspMalformed),
     (500, None, PspUnavailable), (503, {}, PspUnavailable), (429, {}, PspUnavailable),
     (402, {"error": {"code": "card_declined", "message": "no"}}, PspRejected), (418, None, PspRejected)],
)  # fmt: skip
async def test_answers_map_to_error_classes(status: int, body: Any, error: type[Exception]) -> None:
    adapter = _adapter(_answer(status, body))
    with pytest.raises(error):
        await adapter.charge("pm_1", 5, "USD", "po_1", "k")
    await adapter.aclose()


async def test_an_answer_for_another_charge_is_a_lie() -> None:
    obj = {"id": "ch_1", "object": "charge", "status": "succeeded", "failure_code": None, "amount": 6,
           "currency": "USD", "reference": "po_1", "payment_method": "pm_1"}  # fmt: skip
    adapter = _adapter(_answer(200, obj))
    with pytest.raises(PspMalformed, match="amount"):
        await adapter.charge("pm_1", 5, "USD", "po_1", "k")
    await adapter.aclose()


async def test_transport_failures_by_whether_the_request_went_out() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def hang_up(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    with pytest.raises(PspUnavailable):
        await _adapter(refuse).charge("pm_1", 5, "USD", "po_1", "k")
    with pytest.raises(PspOutcomeUnknown):
        await _adapter(hang_up).charge("pm_1", 5, "USD", "po_1", "k")
    with pytest.raises(PspUnavailable):
        await _adapter(hang_up).find_charge("k")


def test_connect_chooses_by_setting_and_names_a_bad_one() -> None:
    assert isinstance(psp.connect(Settings()), SimulatorPsp)
    for name in ("stripe", "Bad-Name", "base"):
        with pytest.raises(ConfigError, match=f"SHARDPAY_PSP_ADAPTER' has value '{name}'"):
            psp.connect(Settings(psp_adapter=name))


def test_psp_settings_defaults_and_errors() -> None:
    settings = Settings.from_env({"SHARDPAY_DB_PREFIX": "x", "SHARDPAY_PSP_PORT": "8123"})
    assert settings.psp_dsn.endswith("/x_psp") and settings.psp_public_url == "http://127.0.0.1:8123"
    assert (settings.psp_url, settings.psp_timeout, settings.psp_adapter) == ("http://127.0.0.1:8100", 5.0,
                                                                              "simulator")  # fmt: skip
    assert settings.psp_webhook_url == "http://127.0.0.1:8000/v1/webhooks/psp"
    for name, value in (("PSP_PORT", "x"), ("PSP_TIMEOUT", "0"), ("PSP_URL", "localhost:1"),
                        ("PSP_WEBHOOK_BACKOFF", "1,a")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"SHARDPAY_{name}"):
            Settings.from_env({f"SHARDPAY_{name}": value})
    with pytest.raises(ConfigError, match="SHARDPAY_PSP_SECRET_KEY' is empty"):
        Settings.from_env({"SHARDPAY_PSP_SECRET_KEY": ""})


@pytest.mark.parametrize(("host", "allowed"), [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                                               ("10.0.0.1", False), ("192.168.1.2", False), ("", False)])  # fmt: skip
def test_sim_knobs_are_only_for_loopback(host: str, allowed: bool) -> None:
    from starlette.requests import Request

    from pspsim.admin import _loopback
    from pspsim.http import SimError

    request = Request({"type": "http", "method": "PUT", "path": "/sim/faults", "headers": [], "client": (host, 1)})
    if allowed:
        _loopback(request)
    else:
        with pytest.raises(SimError) as refused:
            _loopback(request)
        assert refused.value.status == 403 and repr(host) in refused.value.message
