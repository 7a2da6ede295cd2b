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
