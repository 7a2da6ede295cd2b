"""Money is an ``int`` number of the currency's minor unit, everywhere, from the edge to ``bigint``."""

from __future__ import annotations

from typing import Any

from shardpay.domain.errors import ApiError

MIN_AMOUNT = 1
MAX_AMOUNT = 10**15

# ISO 4217 code -> digits of the minor unit.
CURRENCIES: dict[str, int] = {
    "AUD": 2, "CAD": 2, "CHF": 2, "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "JPY": 0,
    "KRW": 0, "KWD": 3, "BHD": 3, "NOK": 2, "NZD": 2, "PLN": 2, "SEK": 2, "SGD": 2, "USD": 2,
}  # fmt: skip


def parse_amount(value: Any, param: str = "amount") -> int:
    """A JSON integer in 1..10^15; floats (even 10.0), strings and booleans are refused."""
    if value is None:
        raise ApiError.missing(param)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError.invalid(param, f"'{param}' must be an integer number of minor units, got {value!r}.")
    if not MIN_AMOUNT <= value <= MAX_AMOUNT:
        raise ApiError.invalid(param, f"'{param}' must be between {MIN_AMOUNT} and {MAX_AMOUNT}, got {value}.")
    return value


def parse_currency(value: Any, param: str = "currency") -> str:
    if value is None:
        raise ApiError.missing(param)
    if not isinstance(value, str) or value not in CURRENCIES:
        raise ApiError.invalid(param, f"'{param}' must be a supported ISO 4217 code (uppercase), got {value!r}.")
    return value
