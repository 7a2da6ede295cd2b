"""Which events move money, and how much: the one place a new money-moving event type is registered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from events.envelope import Event, InvalidEvent
from shardpay.domain.money import CURRENCIES


@dataclass(frozen=True)
class Movement:
    merchant: str
    currency: str
    amount: int  # minor units, > 0
    minute: datetime  # the minute the event was created in, UTC


def _object_amount(event: Event) -> Movement:
    """The ``amount`` and ``currency`` of the event's object (transfer, payment order, payout, refund)."""
    amount, currency = event.obj.get("amount"), event.obj.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidEvent(f"{event.type} {event.id} has no positive integer amount")
    if currency not in CURRENCIES:
        raise InvalidEvent(f"{event.type} {event.id} has no supported currency")
    minute = datetime.fromtimestamp(event.created - event.created % 60, UTC)
    return Movement(event.merchant, currency, amount, minute)


# Gross volume: every completed movement counts its full amount, whichever way the money went.
MONEY_EVENTS: dict[str, Callable[[Event], Movement]] = {
    "transfer.succeeded": _object_amount,
    "payment_order.succeeded": _object_amount,
    "payout.paid": _object_amount,
    "refund.succeeded": _object_amount,
}


def movement_of(event: Event) -> Movement | None:
    """The money the event moved, or None for events that move none (wallet.created, transfer.failed...)."""
    extract = MONEY_EVENTS.get(event.type)
    return None if extract is None else extract(event)
