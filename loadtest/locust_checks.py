"""What a right answer looks like (``API.md``), as checks the Locust merchant runs on each final response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    replayed: bool


# (status, body) -> a problem to report as the request's failure, or None when the response is right.
Check = Callable[[int, dict[str, Any]], str | None]


def error_code(body: dict[str, Any]) -> str | None:
    error = body.get("error")
    return error.get("code") if isinstance(error, dict) else None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wallet_check(currency: str, wallet_id: str | None = None, new: bool = False) -> Check:
    def check(status: int, body: dict[str, Any]) -> str | None:
        if not str(body.get("id", "")).startswith("wal_") or body.get("object") != "wallet":
            return f"not a wallet: {body}"
        if wallet_id is not None and body["id"] != wallet_id:
            return f"asked for {wallet_id}, got {body['id']}"
        if not (is_int(body.get("available")) and is_int(body.get("pending"))):
            return f"available/pending are not integers: {body}"
        if body["available"] < 0 or body["pending"] < 0:
            return f"negative balance: {body}"
        if new and (body["available"] != 0 or body.get("currency") != currency):
            return f"a new wallet must be empty and in {currency}: {body}"
        return None

    return check


def transfer_check(request: dict[str, Any] | None = None) -> Check:
    def check(status: int, body: dict[str, Any]) -> str | None:
        if not str(body.get("id", "")).startswith("tr_") or body.get("object") != "transfer":
            return f"not a transfer: {body}"
        allowed = ("succeeded", "processing") if request else ("succeeded", "processing", "failed")
        if body.get("status") not in allowed:
            return f"unexpected transfer status {body.get('status')!r}"
        if request is not None:
            for field in ("source", "destination", "amount", "currency"):
                if body.get(field) != request[field]:
                    return f"{field} is {body.get(field)!r}, sent {request[field]!r}"
        return None

    return check


def insufficient_funds(status: int, body: dict[str, Any]) -> str | None:
    error = body.get("error")
    if not isinstance(error, dict) or error.get("type") != "payment_error":
        return f"402 without a payment_error: {body}"
    if error.get("code") != "insufficient_funds":
        return f"402 {error.get('code')!r}, expected insufficient_funds"
    return None


def entries_check(wallet_id: str, limit: int, after: str | None) -> Check:
    def check(status: int, body: dict[str, Any]) -> str | None:
        data = body.get("data")
        if body.get("object") != "list" or not isinstance(data, list) or not isinstance(body.get("has_more"), bool):
            return f"not a list: {str(body)[:200]}"
        if len(data) > limit or (body["has_more"] and len(data) != limit):
            return f"{len(data)} entries for limit={limit}, has_more={body['has_more']}"
        numbers = []
        for entry in data:
            entry_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(entry_id, str) or not entry_id.startswith("ent_") or not entry_id[4:].isdigit():
                return f"not a ledger entry: {entry}"
            if entry.get("wallet") != wallet_id or not is_int(entry.get("amount")) or entry["amount"] == 0:
                return f"entry {entry_id} is not a non-zero integer amount of {wallet_id}: {entry}"
            numbers.append(int(entry_id[4:]))
        if numbers != sorted(numbers, reverse=True) or len(set(numbers)) != len(numbers):
            return "entries are not newest first"
        if after is not None and numbers and numbers[0] >= int(after[4:]):
            return f"page after {after} starts at ent_{numbers[0]}"
        return None

    return check


PAYMENT_STATUSES = ("processing", "succeeded", "partially_failed", "failed")
ORDER_STATUSES = ("processing", "succeeded", "failed")
PAYOUT_STATUSES = ("processing", "paid", "failed")
REFUND_STATUSES = ("processing", "succeeded", "failed")


def _object(body: dict[str, Any], prefix: str, kind: str, object_id: str | None) -> str | None:
    if not str(body.get("id", "")).startswith(prefix) or body.get("object") != kind:
        return f"not a {kind}: {str(body)[:200]}"
    if object_id is not None and body["id"] != object_id:
        return f"asked for {object_id}, got {body['id']}"
    return None


def _same(body: dict[str, Any], request: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    for name in fields:
        if name in request and body.get(name) != request[name]:
            return f"{name} is {body.get(name)!r}, sent {request[name]!r}"
    return None


def checkout_check(psp_url: str | None) -> Check:
    """A checkout session: its id, the PSP's token and the hosted page (at the PSP's public URL, when known)."""

    def check(status: int, body: dict[str, Any]) -> str | None:
        url = body.get("redirect_url")
        if not str(body.get("id", "")).startswith("cs_") or not isinstance(body.get("psp_token"), str):
            return f"not a checkout session: {str(body)[:200]}"
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return f"redirect_url is not an http(s) URL: {url!r}"
        if psp_url is not None and not url.startswith(f"{psp_url}/"):
            return f"redirect_url {url!r} is not on the PSP at SHARDPAY_PSP_PUBLIC_URL={psp_url}"
        return None

    return check


def payment_check(request: dict[str, Any] | None = None, payment_id: str | None = None) -> Check:
    """A payment and its orders; against the request that created it, if given."""

    def check(status: int, body: dict[str, Any]) -> str | None:
        problem = _object(body, "pay_", "payment", payment_id)
        orders = body.get("orders")
        if problem or body.get("status") not in PAYMENT_STATUSES or not isinstance(orders, list) or not orders:
            return problem or f"payment status {body.get('status')!r} or orders {str(orders)[:100]} are wrong"
        if request is not None and (body.get("payment_method") != request["payment_method"]
                                    or len(orders) != len(request["orders"])):  # fmt: skip
            return f"a payment of {len(orders)} orders with {body.get('payment_method')!r} for {request}"
        for i, order in enumerate(orders):
            problem = _order_problem(order, body["id"], request["orders"][i] if request else {})
            if problem:
                return f"orders[{i}]: {problem}"
        return None

    return check


def _order_problem(order: Any, payment_id: str, sent: dict[str, Any]) -> str | None:
    if not isinstance(order, dict):
        return f"not an object: {order!r}"
    problem = _object(order, "po_", "payment_order", None) or _same(order, sent, ("destination", "amount", "currency"))
    if problem or order.get("status") not in ORDER_STATUSES or order.get("payment") != payment_id:
        return problem or f"status or payment wrong: {str(order)[:200]}"
    return None


def payout_check(request: dict[str, Any] | None = None, payout_id: str | None = None,
                 expect: str | None = None) -> Check:  # fmt: skip
    """A payout; once final it must be ``expect`` (a ``ba_`` ending in ``fail`` fails, any other is paid)."""

    def check(status: int, body: dict[str, Any]) -> str | None:
        problem = _object(body, "out_", "payout", payout_id) or _same(
            body, request or {}, ("source", "amount", "currency", "destination")
        )
        if problem or body.get("status") not in PAYOUT_STATUSES:
            return problem or f"payout status {body.get('status')!r}"
        if request is not None and body["status"] != "processing":
            return f"a new payout is {body['status']!r}, not 'processing'"
        if expect is not None and body["status"] not in ("processing", expect):
            why = body.get("failure_code")
            return f"payout to {body.get('destination')} is {body['status']!r} ({why}), expected {expect!r}"
        return None

    return check


def refund_check(request: dict[str, Any] | None = None, refund_id: str | None = None) -> Check:
    def check(status: int, body: dict[str, Any]) -> str | None:
        problem = _object(body, "re_", "refund", refund_id) or _same(body, request or {}, ("payment_order",))
        if problem or body.get("status") not in REFUND_STATUSES or not is_int(body.get("amount")):
            return problem or f"refund status {body.get('status')!r} or amount {body.get('amount')!r}"
        if request is not None and request.get("amount") is not None and body["amount"] != request["amount"]:
            return f"amount is {body['amount']}, asked {request['amount']}"
        return None

    return check


def refund_refused(status: int, body: dict[str, Any]) -> str | None:
    """400 for a refund that cannot be: more than is left of the order, or an order that did not succeed."""
    if error_code(body) not in ("amount_too_large", "charge_not_refundable"):
        return f"400 {error_code(body)!r}, expected amount_too_large or charge_not_refundable"
    return None
