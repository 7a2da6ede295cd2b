"""/v1/wallets"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from gateway import guard, params
from gateway.routes import route
from gateway.state import Resources
from shardpay.domain.money import parse_currency
from shardpay.services import wallets
from shardpay.services.outcome import Caller, Outcome


async def create_wallet(res: Resources, caller: Caller, body: dict[str, Any]) -> Outcome:
    params.only(body, {"currency", "reference", "metadata"})
    cmd = wallets.CreateWallet(
        currency=parse_currency(body.get("currency")),
        reference=params.string(body, "reference", 255),
        metadata=params.metadata(body),
    )
    return await wallets.create(res.shards, caller, cmd)


async def get_wallet(res: Resources, caller: Caller, request: Request) -> Outcome:
    return await wallets.get(res.shards, caller, request.path_params["id"])


async def list_entries(res: Resources, caller: Caller, request: Request) -> Outcome:
    limit = params.limit(request.query_params.get("limit"))
    starting_after = request.query_params.get("starting_after")
    return await wallets.entries(res.shards, caller, request.path_params["id"], limit, starting_after)


ROUTES = [
    route("/v1/wallets", guard.write(create_wallet), "POST"),
    route("/v1/wallets/{id}", guard.read(get_wallet), "GET"),
    route("/v1/wallets/{id}/entries", guard.read(list_entries), "GET"),
]
