"""Parameters of the /v1 calls, checked before any work: a bad one is a 400 naming it, never a 500."""

from __future__ import annotations

import re
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from pspsim.http import invalid, missing
from pspsim.money import CURRENCIES, MAX_AMOUNT, valid_amount

_PRINTABLE = re.compile(r"^[\x20-\x7e]{1,255}$")
_ID = re.compile(r"^[a-z]+_[A-Za-z0-9]{1,64}$")
_BANK_ACCOUNT = re.compile(r"^ba_[A-Za-z0-9_]{1,64}$")


def amount(params: dict[str, Any], name: str = "amount") -> int:
    value = params.get(name)
    if value is None:
        raise missing(name)
    if not valid_amount(value):
        raise invalid(name, f"'{name}' must be an integer number of minor units in 1..{MAX_AMOUNT}, got {value!r}.")
    result: int = value
    return result


def currency(params: dict[str, Any]) -> str:
    value = params.get("currency")
    if value is None:
        raise missing("currency")
    if not isinstance(value, str) or value not in CURRENCIES:
        raise invalid("currency", f"'currency' must be a supported ISO 4217 code (uppercase), got {value!r}.")
    return value


def text(params: dict[str, Any], name: str) -> str:
    """A required string of 1..255 printable ASCII characters (references, keys)."""
    value = params.get(name)
    if value is None:
        raise missing(name)
    if not printable(value):
        raise invalid(name, f"'{name}' must be 1..255 printable ASCII characters, got {value!r}.")
    return value


def object_id(params: dict[str, Any], name: str, prefix: str) -> str:
    value = params.get(name)
    if value is None:
        raise missing(name)
    if not isinstance(value, str) or not value.startswith(prefix + "_") or not _ID.match(value):
        raise invalid(name, f"'{name}' must be a '{prefix}_' id, got {value!r}.")
    return value


def bank_account(params: dict[str, Any]) -> str:
    value = params.get("destination")
    if value is None:
        raise missing("destination")
    if not isinstance(value, str) or not _BANK_ACCOUNT.match(value):
        raise invalid("destination", f"'destination' must be a bank account id 'ba_...', got {value!r}.")
    return value


def printable(value: Any) -> TypeGuard[str]:
    """1..255 printable ASCII: every free-text field, key and query value (PostgreSQL refuses a NUL)."""
    return isinstance(value, str) and _PRINTABLE.match(value) is not None


URL_LENGTH = 2048  # as browsers and PSPs take them; a return URL often carries the merchant's own query string
_URL = re.compile(rf"[!-~]{{1,{URL_LENGTH}}}")


def return_url(params: dict[str, Any]) -> str:
    value = params.get("return_url")
    if value is None:
        raise missing("return_url")
    if not isinstance(value, str) or _URL.fullmatch(value) is None:
        raise invalid("return_url", f"'return_url' must be 1..{URL_LENGTH} printable ASCII characters, no spaces.")
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 literal
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid("return_url", f"'return_url' must be an absolute http(s) URL, got {value!r}.")
    return value


def idempotency_key(header: str | None) -> str:
    if header is None:
        raise invalid(None, "This call needs an Idempotency-Key header.", "idempotency_key_missing")
    if not printable(header):
        raise invalid(None, f"Idempotency-Key must be 1..255 printable ASCII characters, got {header!r}.")
    return header


def query(value: str | None, name: str, allowed: frozenset[str] | None = None) -> str | None:
    """An optional query parameter: absent, or printable (and one of ``allowed`` if given)."""
    if value is None:
        return None
    if not printable(value) or (allowed is not None and value not in allowed):
        expected = f"one of {sorted(allowed)}" if allowed else "1..255 printable ASCII characters"
        raise invalid(name, f"'{name}' must be {expected}, got {value!r}.")
    return value
