"""The customer's hosted payment page: a plain HTML form that tokenizes a card into a ``pm_`` and goes back.

Only last4, the brand and the test behaviour are stored, never the number. A session pays once: paying it
again redirects to the same ``pm_``.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pspsim import cards, events, render
from pspsim.db import Conn
from pspsim.http import read_body
from pspsim.money import CURRENCIES
from pspsim.state import Sim, sim_of

_TOKEN = re.compile(r"^tok_[0-9a-f]{1,64}$")
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Pay {amount}</title></head>
<body><h1>Pay {amount}</h1>{error}
<form method="post" action="/pay/{token}">
<label>Card number <input name="card_number" inputmode="numeric" autocomplete="cc-number" required></label>
<button type="submit">Pay</button>
</form></body></html>
"""


def display(amount: int, currency: str) -> str:
    digits = CURRENCIES[currency]
    major = f"{amount // 10**digits}.{amount % 10**digits:0{digits}d}" if digits else str(amount)
    return f"{major} {currency}"


def form(row: asyncpg.Record, error: str | None = None, status: int = 200) -> HTMLResponse:
    notice = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    page = _PAGE.format(amount=html.escape(display(row["amount"], row["currency"])), error=notice,
                        token=html.escape(row["token"]))  # fmt: skip
    return HTMLResponse(page, status)


def back_to_merchant(return_url: str, session_id: str, payment_method: str) -> str:
    parts = urlsplit(return_url)
    extra = urlencode({"session": session_id, "payment_method": payment_method})
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _gone() -> HTMLResponse:
    return HTMLResponse("<!doctype html><title>Not found</title><p>This payment page does not exist.</p>", 404)


def _token(request: Request) -> str | None:
    token: str = request.path_params["token"]
    return token if _TOKEN.match(token) else None


async def show(request: Request) -> Response:
    token = _token(request)
    row = (
        None
        if token is None
        else await sim_of(request).pool.fetchrow("SELECT * FROM hosted_sessions WHERE token = $1", token)
    )
    if row is None:
        return _gone()
    if row["payment_method"] is not None:
        url = back_to_merchant(row["return_url"], row["id"], row["payment_method"])
        return HTMLResponse(f'<!doctype html><p>Paid. <a href="{html.escape(url)}">Back to the shop</a></p>')
    return form(row)


async def pay(request: Request) -> Response:
    sim = sim_of(request)
    fields = parse_qs((await read_body(request, 16 * 1024)).decode("latin-1"))
    number = (fields.get("card_number") or [""])[0]
    token = _token(request)
    if token is None:
        return _gone()
    async with sim.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM hosted_sessions WHERE token = $1 FOR UPDATE", token)
        if row is None:
            return _gone()
        if row["payment_method"] is None:
            card = cards.tokenize(number)
            if card is None:
                return form(row, "That card number is not valid. Check it and try again.", 400)
            row = await _complete(sim, conn, row, card)
    sim.wake.set()
    return RedirectResponse(back_to_merchant(row["return_url"], row["id"], row["payment_method"]), 303)


async def _complete(sim: Sim, conn: Conn, row: asyncpg.Record, card: cards.Card) -> asyncpg.Record:
    pm = render.new_id("pm")
    await conn.execute("INSERT INTO payment_methods (id, last4, brand, behaviour) VALUES ($1, $2, $3, $4)",
                       pm, card.last4, card.brand, card.behaviour)  # fmt: skip
    done = await conn.fetchrow(
        "UPDATE hosted_sessions SET payment_method = $2, completed = now() WHERE id = $1 RETURNING *", row["id"], pm
    )
    assert done is not None
    obj: dict[str, Any] = render.session(done, sim.settings.psp_public_url)
    obj["card"] = {"last4": card.last4, "brand": card.brand}
    await events.enqueue(conn, "hosted_session.completed", obj, sim.faults)
    return done


ROUTES = [Route("/pay/{token}", show, methods=["GET"]), Route("/pay/{token}", pay, methods=["POST"])]
