"""The /v1 calls shardpay makes (PSP.md's table). Auth and faults are the call layer's; these parse and act."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pspsim import idem, render, store, validate
from pspsim.db import Conn
from pspsim.faults import Faults
from pspsim.http import SimError, invalid, json, not_found, read_json
from pspsim.settlement import parse_day, settlement_file
from pspsim.state import Sim, sim_of

Endpoint = Callable[[Request], Awaitable[Response]]
Act = Callable[[Conn, Faults, dict[str, Any]], Awaitable[dict[str, Any]]]


async def _once(request: Request, endpoint: str, params: dict[str, Any], act: Act) -> Response:
    sim = sim_of(request)
    key = validate.idempotency_key(request.headers.get("idempotency-key"))
    answer = await idem.once(sim.pool, endpoint, key, params, partial(_act, act, sim.faults, {**params, "key": key}))
    if not answer.replayed:
        sim.wake.set()
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, answer.status, headers, media_type="application/json")


async def _act(act: Act, faults: Faults, params: dict[str, Any], conn: Conn) -> dict[str, Any]:
    return await act(conn, faults, params)


async def _session(sim: Sim, conn: Conn, faults: Faults, params: dict[str, Any]) -> dict[str, Any]:
    row = await conn.fetchrow(
        "INSERT INTO hosted_sessions (id, token, amount, currency, return_url, reference) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        render.new_id("hs"), render.new_id("tok"), params["amount"], params["currency"], params["return_url"],
        params["reference"],
    )  # fmt: skip
    assert row is not None
    return render.session(row, sim.settings.psp_public_url)


async def create_session(request: Request) -> Response:
    body = await read_json(request)
    params = {"amount": validate.amount(body), "currency": validate.currency(body),
              "return_url": validate.return_url(body), "reference": validate.text(body, "reference")}  # fmt: skip
    return await _once(request, "hosted_sessions", params, partial(_session, sim_of(request)))


async def create_charge(request: Request) -> Response:
    body = await read_json(request)
    params = {"payment_method": validate.object_id(body, "payment_method", "pm"), "amount": validate.amount(body),
              "currency": validate.currency(body), "reference": validate.text(body, "reference")}  # fmt: skip
    return await _once(request, "charges", params, store.charge)


async def create_refund(request: Request) -> Response:
    body = await read_json(request)
    params: dict[str, Any] = {"charge": validate.object_id(body, "charge", "ch"),
                              "reference": validate.text(body, "reference")}  # fmt: skip
    if body.get("amount") is not None:
        params["amount"] = validate.amount(body)
    return await _once(request, "refunds", params, store.refund)


async def create_payout(request: Request) -> Response:
    body = await read_json(request)
    params = {"amount": validate.amount(body), "currency": validate.currency(body),
              "destination": validate.bank_account(body), "reference": validate.text(body, "reference")}  # fmt: skip
    return await _once(request, "payouts", params, store.payout)


def _lookup(kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def lookup(request: Request) -> Response:
        key = validate.query(request.query_params.get("idempotency_key"), "idempotency_key")
        if key is None:
            raise SimError(400, "invalid_request_error", "parameter_missing",
                           "Look-ups need the query parameter 'idempotency_key'.", "idempotency_key")  # fmt: skip
        found = await store.find(sim_of(request).pool, kind, key)
        if found is None:
            raise not_found(f"{kind} made under idempotency key {key!r}")
        return json(200, found)

    return lookup


async def payment_method(request: Request) -> Response:
    """A saved card (an addition to PSP.md, as Stripe's GET /v1/payment_methods/{id}): what the merchant may know
    of it (brand, last4) and the hosted session it came from, with that session's reference."""
    pm = request.path_params["id"]
    row = await sim_of(request).pool.fetchrow(
        "SELECT p.id, p.brand, p.last4, extract(epoch FROM p.created)::bigint AS created, s.id AS session, "
        "s.reference FROM payment_methods p LEFT JOIN hosted_sessions s ON s.payment_method = p.id WHERE p.id = $1",
        pm,
    )
    if row is None:
        raise not_found(f"payment method {pm!r}")
    return json(200, {"id": row["id"], "object": "payment_method", "card": {"brand": row["brand"],
                      "last4": row["last4"]}, "session": row["session"], "reference": row["reference"],
                      "created": row["created"]})  # fmt: skip


async def settlement(request: Request) -> Response:
    text = request.path_params["day"]
    try:
        day = parse_day(text)
    except ValueError:
        raise invalid("date", f"The settlement date must be YYYY-MM-DD, got {text!r}.") from None
    return await settlement_file(sim_of(request).pool, day)


def _create_or_find(path: str, create: Endpoint, kind: str) -> Route:
    """POST creates, GET looks up by key: one route, so a 405 names both methods in Allow."""
    find = _lookup(kind)

    async def dispatch(request: Request) -> Response:
        return await (create if request.method == "POST" else find)(request)

    return Route(path, dispatch, methods=["GET", "POST"])


ROUTES = [
    Route("/v1/hosted_sessions", create_session, methods=["POST"]),
    _create_or_find("/v1/charges", create_charge, "charge"),
    _create_or_find("/v1/refunds", create_refund, "refund"),
    _create_or_find("/v1/payouts", create_payout, "payout"),
    Route("/v1/payment_methods/{id}", payment_method, methods=["GET"]),
    Route("/v1/settlements/{day}.csv", settlement, methods=["GET"]),
]
