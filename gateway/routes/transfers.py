"""/v1/transfers"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from gateway import guard, params
from gateway.routes import route
from gateway.state import Resources
from shardpay.domain.money import parse_amount, parse_currency
from shardpay.services import transfers
from shardpay.services.outcome import Caller, Outcome


async def create_transfer(res: Resources, caller: Caller, body: dict[str, Any]) -> Outcome:
    params.only(body, {"source", "destination", "amount", "currency", "description"})
    cmd = transfers.CreateTransfer(
        source=params.required_string(body, "source", 64),
        destination=params.required_string(body, "destination", 64),
        amount=parse_amount(body.get("amount")),
        currency=parse_currency(body.get("currency")),
        description=params.string(body, "description", 1000),
    )
    return await transfers.create(res.shards, caller, cmd, res.settings.saga_inline_timeout)


async def get_transfer(res: Resources, caller: Caller, request: Request) -> Outcome:
    return await transfers.get(res.shards, caller, request.path_params["id"])


ROUTES = [
    route("/v1/transfers", guard.write(create_transfer), "POST"),
    route("/v1/transfers/{id}", guard.read(get_transfer), "GET"),
]
