"""Amounts, currencies and the PSP's fee. Integer minor units only. Pure rules, no I/O."""

from __future__ import annotations

from typing import Any

MAX_AMOUNT = 10**15

# ISO 4217 code -> digits of its minor unit: what this PSP accepts.
CURRENCIES: dict[str, int] = {
    "AUD": 2, "BHD": 3, "CAD": 2, "CHF": 2, "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "JPY": 0,
    "KRW": 0, "KWD": 3, "NOK": 2, "NZD": 2, "PLN": 2, "SEK": 2, "SGD": 2, "USD": 2,
}  # fmt: skip

# The fee on a settled charge: 2.9% (rounded half up) plus a fixed part worth about 0.30 of a major unit:
# 30 cents, 300 fils. A zero-decimal currency cannot carry 0.3 of its unit, so it pays 30 whole units (30 yen
# is about 0.20 USD; 0.3 rounded would be no fixed fee at all).
FEE_PER_MILLE = 29
FIXED_FEE = {0: 30, 2: 30, 3: 300}


def fee(amount: int, currency: str) -> int:
    """The PSP's fee on a settled charge of ``amount`` minor units."""
    return (amount * FEE_PER_MILLE + 500) // 1000 + FIXED_FEE[CURRENCIES[currency]]


def valid_amount(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_AMOUNT
