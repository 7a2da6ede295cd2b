"""/v1/payouts and /v1/refunds: money out through the PSP."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from gateway import guard, params
from gateway.routes import route
from gateway.state import Resources
from shardpay.domain.errors import ApiError
from shardpay.domain.money import parse_amount, parse_currency
from shardpay.services import outflows
from shardpay.services.outcome import Caller, Outcome


async def create_payout(res: Resources, caller: Caller, body: dict[str, Any]) -> Outcome:
    params.only(body, {"source", "amount", "currency", "destination"})
    destination = params.required_string(body, "destination", 128)
    if outflows.BANK_ACCOUNT.fullmatch(destination) is None:
        raise ApiError.invalid("destination", f"'destination' must be a bank account id (ba_...), got {destination!r}.")
    cmd = outflows.CreatePayout(
        source=params.required_string(body, "source", 64),
        amount=parse_amount(body.get("amount")),
        currency=parse_currency(body.get("currency")),
        destination=destination,
    )
    return await outflows.create_payout(res.shards, caller, cmd)


async def get_payout(res: Resources, caller: Caller, request: Request) -> Outcome:
    return await outflows.get_payout(res.shards, caller, request.path_params["id"])


async def create_refund(res: Resources, caller: Caller, body: dict[str, Any]) -> Outcome:
    params.only(body, {"payment_order", "amount"})
    amount = None if body.get("amount") is None else parse_amount(body.get("amount"))
    cmd = outflows.CreateRefund(params.required_string(body, "payment_order", 64), amount)
    return await outflows.create_refund(res.shards, caller, cmd)


async def get_refund(res: Resources, caller: Caller, request: Request) -> Outcome:
    return await outflows.get_refund(res.shards, caller, request.path_params["id"])


ROUTES = [
    route("/v1/payouts", guard.write(create_payout), "POST"),
    route("/v1/payouts/{id}", guard.read(get_payout), "GET"),
    route("/v1/refunds", guard.write(create_refund), "POST"),
    route("/v1/refunds/{id}", guard.read(get_refund), "GET"),
]
