"""Amounts are JSON integers in minor units, 1..10^15; currencies are supported uppercase ISO 4217 codes."""

from __future__ import annotations

from typing import Any

import pytest

from shardpay.domain.errors import ApiError
from shardpay.domain.money import CURRENCIES, MAX_AMOUNT, parse_amount, parse_currency


@pytest.mark.parametrize("amount", [1, 2, 10, 10**15])
def test_integer_amounts_in_range_are_accepted(amount: int) -> None:
    assert parse_amount(amount) == amount


@pytest.mark.parametrize(
    "amount", [10.0, 10.5, 1e3, "10", "1e3", True, False, 0, -1, -(10**15), 10**15 + 1, 2**63, [10], {"v": 10}]
)
def test_everything_else_is_a_400_naming_the_parameter(amount: Any) -> None:
    with pytest.raises(ApiError) as caught:
        parse_amount(amount)
    error = caught.value
    assert (error.status, error.type, error.code, error.param) == (400, "invalid_request_error",
                                                                   "parameter_invalid", "amount")  # fmt: skip
    assert "'amount'" in error.message


def test_a_missing_amount_is_parameter_missing() -> None:
    with pytest.raises(ApiError) as caught:
        parse_amount(None, "amount")
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "parameter_missing", "amount")


def test_the_bound_is_ten_to_the_fifteen() -> None:
    assert MAX_AMOUNT == 10**15


@pytest.mark.parametrize("currency", ["USD", "EUR", "GBP", "JPY", "KWD"])
def test_supported_currencies_are_accepted(currency: str) -> None:
    assert currency in CURRENCIES
    assert parse_currency(currency) == currency


@pytest.mark.parametrize("currency", ["usd", "Usd", "XXX", "US", "USDD", " USD", 840, True, ["USD"]])
def test_unsupported_or_malformed_currencies_are_refused(currency: Any) -> None:
    with pytest.raises(ApiError) as caught:
        parse_currency(currency)
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "parameter_invalid", "currency")


def test_a_missing_currency_is_parameter_missing() -> None:
    with pytest.raises(ApiError) as caught:
        parse_currency(None)
    assert caught.value.code == "parameter_missing"


def test_minor_unit_digits_of_the_listed_currencies() -> None:
    assert (CURRENCIES["USD"], CURRENCIES["JPY"], CURRENCIES["KWD"]) == (2, 0, 3)
