"""What several PSP tests do: pay on the hosted page as a browser would, read the simulator's truth."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from psp.base import Psp
from tests.conftest import key

RETURN_URL = "http://127.0.0.1:9/checkout/done?order=42"


async def pay(adapter: Psp, card: str = "4242424242424242", amount: int = 1000, currency: str = "USD") -> str:
    """A customer pays a fresh hosted session with ``card``; the ``pm_`` the browser is sent back with."""
    session = await adapter.create_hosted_session(amount, currency, RETURN_URL, f"pay_{key()}", key())
    async with httpx.AsyncClient(timeout=10) as browser:
        form = await browser.get(session.url)
        assert form.status_code == 200 and 'name="card_number"' in form.text
        paid = await browser.post(session.url, data={"card_number": card})
    assert paid.status_code == 303, paid.text
    query = parse_qs(urlsplit(paid.headers["location"]).query)
    assert query["session"] == [session.id]
    payment_method: str = query["payment_method"][0]
    return payment_method


async def set_faults(http: httpx.AsyncClient, **faults: Any) -> dict[str, Any]:
    response = await http.put("/sim/faults", json=faults)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def records(http: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = (await http.get("/sim/records", params=query)).json()["data"]
    return data


async def stats(http: httpx.AsyncClient, endpoint: str) -> dict[str, int]:
    endpoints = (await http.get("/sim/stats")).json()["endpoints"]
    answers: dict[str, int] = endpoints.get(endpoint, {}).get("answers", {})
    return answers


async def sim_events(http: httpx.AsyncClient, event_type: str | None = None) -> list[dict[str, Any]]:
    query = {"type": event_type} if event_type else {}
    data: list[dict[str, Any]] = (await http.get("/sim/events", params=query)).json()["data"]
    return data


async def eventually(check: Any, within: float = 10.0) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy."""
    deadline = time.monotonic() + within
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return result
