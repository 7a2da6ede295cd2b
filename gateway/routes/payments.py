"""/v1/payments and /v1/checkout_sessions: pay-ins through the PSP."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from gateway import guard, params
from gateway.routes import route
from gateway.state import Resources
from shardpay.domain.errors import ApiError
from shardpay.domain.money import parse_amount, parse_currency
from shardpay.services import checkout, payments
from shardpay.services.outcome import Caller, Outcome


def _orders(body: dict[str, Any]) -> list[payments.NewOrder]:
    raw = body.get("orders")
    if raw is None:
        raise ApiError.missing("orders")
    if not isinstance(raw, list) or not 1 <= len(raw) <= payments.MAX_ORDERS:
        raise ApiError.invalid("orders", f"'orders' must be a list of 1 to {payments.MAX_ORDERS} orders.")
    return [_order(i, item) for i, item in enumerate(raw)]


def _order(i: int, item: Any) -> payments.NewOrder:
    name = f"orders[{i}]"
    if not isinstance(item, dict):
        raise ApiError.invalid(name, f"'{name}' must be an object.")
    unknown = sorted(set(item) - {"destination", "amount", "currency", "reference"})
    if unknown:
        raise ApiError.invalid(f"{name}[{unknown[0]}]", f"Received unknown parameter: '{name}[{unknown[0]}]'.",
                               code="parameter_unknown")  # fmt: skip
    return payments.NewOrder(
        destination=params.required_string(item, "destination", 64, f"{name}[destination]"),
        amount=parse_amount(item.get("amount"), f"{name}[amount]"),
        currency=parse_currency(item.get("currency"), f"{name}[currency]"),
        reference=params.string(item, "reference", 255, label=f"{name}[reference]"),
    )


def _payment_method(body: dict[str, Any]) -> str:
    method = params.required_string(body, "payment_method", 128)
    if payments.PAYMENT_METHOD.fullmatch(method) is None:
        raise ApiError.invalid("payment_method", f"'payment_method' must be a pm_ token from the PSP, got {method!r}.")
    return method


async def create_payment(res: Resources, caller: Caller, body: dict[str, Any]) -> Outcome:
    params.only(body, {"payment_method", "orders"})
    cmd = payments.CreatePayment(payment_method=_payment_method(body), orders=_orders(body))
    await res.payment_methods.check(caller.merchant_id, cmd.payment_method, caller.request_id)
    return await payments.create(res.shards, caller, cmd)


async def get_payment(res: Resources, caller: Caller, request: Request) -> Outcome:
    return await payments.get(res.shards, caller, request.path_params["id"])


def _return_url(body: dict[str, Any]) -> str:
    url = params.required_string(body, "return_url", checkout.RETURN_URL_LENGTH)
    try:
        parts = urlsplit(url) if url.isascii() and url.isprintable() and " " not in url else None
    except ValueError:  # an unclosed IPv6 literal, say
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError.invalid("return_url", f"'return_url' must be an http(s) URL, got {url[:100]!r}.")
    return url


async def create_checkout_session(res: Resources, caller: Caller, body: dict[str, Any]) -> Outcome:
    params.only(body, {"amount", "currency", "return_url"})
    cmd = checkout.CreateCheckout(parse_amount(body.get("amount")), parse_currency(body.get("currency")),
                                  _return_url(body))  # fmt: skip
    return await checkout.create(res.shards, res.psp, res.psp_breakers["hosted_session"], caller, cmd)


ROUTES = [
    route("/v1/payments", guard.write(create_payment), "POST"),
    route("/v1/payments/{id}", guard.read(get_payment), "GET"),
    route("/v1/checkout_sessions", guard.write(create_checkout_session), "POST"),
]
