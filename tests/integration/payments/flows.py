"""What the payment tests do again and again: get a payment method as a customer would, pay, wait for the end."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import key, post

FAULTS_OFF: dict[str, Any] = {
    "decline_rate": 0, "error_rate": 0, "reset_rate": 0, "timeout_after_commit_rate": 0, "pending_rate": 0,
    "latency_ms": 0, "webhook_drop_rate": 0, "webhook_duplicate_rate": 0, "webhook_delay_ms": 0,
    "webhook_reorder": False, "outage": False, "refund_failure_rate": 0, "malformed_rate": 0,
}  # fmt: skip
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
NO_FUNDS_CARD = "4000000000009995"


async def payment_method(client: httpx.AsyncClient, card: str = GOOD_CARD, amount: int = 1000) -> str:
    """A merchant opens a checkout session; its customer pays on the PSP's hosted page with ``card`` and is sent
    back with the ``pm_`` token."""
    session = await post(client, "/v1/checkout_sessions",
                         {"amount": amount, "currency": "USD", "return_url": "https://shop.example/done"})  # fmt: skip
    assert session.status_code == 201, session.text
    url = session.json()["redirect_url"]
    async with httpx.AsyncClient(timeout=10) as browser:
        form = await browser.get(url)
        assert form.status_code == 200, form.text
        paid = await browser.post(url, data={"card_number": card})
    assert paid.status_code == 303, paid.text
    method: str = parse_qs(urlsplit(paid.headers["location"]).query)["payment_method"][0]
    return method


def order(destination: str, amount: int, currency: str = "USD") -> dict[str, Any]:
    return {"destination": destination, "amount": amount, "currency": currency}


async def pay(
    client: httpx.AsyncClient, method: str, *orders: dict[str, Any], idem: str | None = None
) -> dict[str, Any]:
    created = await post(client, "/v1/payments", {"payment_method": method, "orders": list(orders)}, idem or key())
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def final(client: httpx.AsyncClient, path: str, within: float = 20.0) -> dict[str, Any]:
    """GET ``path`` until its status is not 'processing' any more."""
    deadline = time.monotonic() + within
    while True:
        got = await client.get(path)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        if body["status"] != "processing":
            return body
        assert time.monotonic() < deadline, f"{path} still processing after {within} s: {body}"
        await asyncio.sleep(0.05)


async def wallet(client: httpx.AsyncClient, wallet_id: str) -> dict[str, Any]:
    got = await client.get(f"/v1/wallets/{wallet_id}")
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def paid_order(client: httpx.AsyncClient, destination: str, amount: int) -> str:
    """The id of a succeeded payment order of ``amount`` into ``destination``."""
    created = await pay(client, await payment_method(client), order(destination, amount))
    done = await final(client, f"/v1/payments/{created['id']}")
    assert done["status"] == "succeeded", done
    order_id: str = done["orders"][0]["id"]
    return order_id
