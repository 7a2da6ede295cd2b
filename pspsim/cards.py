"""Test cards: the Luhn check, the brand, and how each test number behaves. Pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

# Behaviours a saved card carries (only these, last4 and the brand are stored: never the number).
SUCCEEDS = "succeeds"
DECLINED = "card_declined"
INSUFFICIENT_FUNDS = "insufficient_funds"
DISPUTED_LATER = "disputed_later"

TEST_CARDS: dict[str, str] = {
    "4242424242424242": SUCCEEDS,
    "4000000000000002": DECLINED,
    "4000000000009995": INSUFFICIENT_FUNDS,
    "4000000000000259": DISPUTED_LATER,
}


@dataclass(frozen=True)
class Card:
    last4: str
    brand: str
    behaviour: str


def luhn_valid(number: str) -> bool:
    """True for 12..19 digits whose Luhn checksum is 0."""
    if not number.isascii() or not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    return "unknown"


def tokenize(raw: str) -> Card | None:
    """The card a customer typed (spaces and dashes allowed), or None if it is not a valid number. Any other
    Luhn-valid number behaves like 4242 4242 4242 4242."""
    number = raw.replace(" ", "").replace("-", "")
    if not luhn_valid(number):
        return None
    return Card(number[-4:], brand(number), TEST_CARDS.get(number, SUCCEEDS))


def charge_outcome(behaviour: str) -> tuple[str, str | None]:
    """(status, failure_code) a charge on a card of this behaviour ends in."""
    if behaviour in (DECLINED, INSUFFICIENT_FUNDS):
        return "failed", behaviour
    return "succeeded", None


def payout_outcome(destination: str) -> tuple[str, str | None]:
    """Any ``ba_`` account is paid, except one whose id ends in ``fail``: closed."""
    return ("failed", "account_closed") if destination.endswith("fail") else ("paid", None)
