"""/v1/transfers and /v1/transfer_batches"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

import idempotency
from gateway import guard, http, params
from gateway.routes import route
from gateway.state import Resources
from shardpay.domain.errors import ApiError
from shardpay.domain.money import parse_amount, parse_currency
from shardpay.services import batches, transfers
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


def _batch_items(body: dict[str, Any]) -> list[batches.Item]:
    raw = body.get("transfers")
    if raw is None:
        raise ApiError.missing("transfers")
    if not isinstance(raw, list) or not 1 <= len(raw) <= batches.MAX_ITEMS:
        raise ApiError.invalid("transfers", f"'transfers' must be a list of 1 to {batches.MAX_ITEMS} transfers.")
    items = [_batch_item(i, item) for i, item in enumerate(raw)]
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.reference in seen:
            raise ApiError.invalid(f"transfers[{i}][reference]", f"The reference {item.reference!r} is used twice "
                                   "in this batch.")  # fmt: skip
        seen.add(item.reference)
    return items


def _batch_item(i: int, item: Any) -> batches.Item:
    name = f"transfers[{i}]"
    if not isinstance(item, dict):
        raise ApiError.invalid(name, f"'{name}' must be an object.")
    unknown = sorted(set(item) - {"source", "destination", "amount", "currency", "reference", "description"})
    if unknown:
        raise ApiError.invalid(f"{name}[{unknown[0]}]", f"Received unknown parameter: '{name}[{unknown[0]}]'.",
                               code="parameter_unknown")  # fmt: skip
    reference = params.required_string(item, "reference", 255, f"{name}[reference]")
    if not idempotency.valid_key(reference):
        raise ApiError.invalid(
            f"{name}[reference]", f"'{name}[reference]' must be 1 to 255 printable ASCII characters."
        )
    cmd = transfers.CreateTransfer(
        source=params.required_string(item, "source", 64, f"{name}[source]"),
        destination=params.required_string(item, "destination", 64, f"{name}[destination]"),
        amount=parse_amount(item.get("amount"), f"{name}[amount]"),
        currency=parse_currency(item.get("currency"), f"{name}[currency]"),
        description=params.string(item, "description", 1000, label=f"{name}[description]"),
    )
    return batches.Item(reference, cmd, item)


async def create_batch(res: Resources, caller: Caller, body: dict[str, Any]) -> Outcome:
    params.only(body, {"transfers"})
    return await batches.create(res.shards, caller, _batch_items(body), res.settings.saga_inline_timeout)


async def get_batch(res: Resources, caller: Caller, request: Request) -> Outcome:
    return await batches.get(res.shards, caller, request.path_params["id"])


ROUTES += [
    route("/v1/transfer_batches", guard.write(create_batch, max_body=http.MAX_BATCH_BODY), "POST"),
    route("/v1/transfer_batches/{id}", guard.read(get_batch), "GET"),
]
