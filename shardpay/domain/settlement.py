"""The PSP's settlement file (``../shared/PSP.md``), line by line: what a well-formed line is, and how a bad one is
named. No I/O: the reconciliation feeds it lines as they arrive.

A file is a header and one line per movement the PSP settled that UTC day:
``psp_reference,reference,type,amount,currency,fee,status,settled_at``. Anything else is refused with the line's
number and the bad value, and nothing of that file is used: a payment system does not half-trust a statement.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from shardpay.domain.money import CURRENCIES, MAX_AMOUNT

FIELDS = ("psp_reference", "reference", "type", "amount", "currency", "fee", "status", "settled_at")
HEADER = ",".join(FIELDS)
TYPES = frozenset({"charge", "refund", "payout"})
STATUSES = frozenset({"settled", "failed"})
MAX_TEXT = 255
# Where each record ends, exactly one per record. missing_internal is fixed by the run; every other category but
# matched waits for an operator.
CATEGORIES = ("matched", "missing_internal", "missing_at_psp", "amount_mismatch", "currency_mismatch",
              "status_mismatch", "duplicate_at_psp", "unknown_reference")  # fmt: skip
FOR_REVIEW = frozenset(CATEGORIES) - {"matched", "missing_internal"}

_SHOWN = 120  # characters of a bad value quoted in a message
_INT = re.compile(r"[0-9]{1,16}", re.ASCII)
_AT = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z|\+00:00)", re.ASCII)
_TEXT = re.compile(r"[\x21-\x7e]+", re.ASCII)  # printable ASCII, no spaces: ids, on both sides


def in_order(counts: dict[str, int]) -> dict[str, int]:
    """Counts per category in CATEGORIES' order, every category present (stored JSON keeps keys in its own order)."""
    return {category: counts.get(category, 0) for category in CATEGORIES}


class MalformedFile(ValueError):
    """The file breaks the format at ``line`` (1 is the header): ``field`` (None for the line as a whole) has
    ``value``, which ``reason`` explains."""

    def __init__(self, line: int, field: str | None, value: str, reason: str) -> None:
        self.line, self.field, self.value, self.reason = line, field, value, reason
        shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "…"
        where = f"line {line}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {shown!r} {reason}")

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "value": self.value[:_SHOWN], "reason": self.reason,
                "message": str(self)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Line:
    """One settlement line, checked. ``status`` is the PSP's: 'settled' or 'failed'."""

    line_no: int
    psp_reference: str
    reference: str
    type: str
    amount: int
    currency: str
    fee: int
    status: str
    settled_at: datetime

    def record(self) -> tuple[object, ...]:
        """The line as a staging row, in ``FIELDS`` order after its number."""
        return (self.line_no, self.psp_reference, self.reference, self.type, self.amount, self.currency, self.fee,
                self.status, self.settled_at)  # fmt: skip


def check_header(text: str) -> None:
    if text.rstrip("\r") != HEADER:
        raise MalformedFile(1, None, text, f"is not the settlement header {HEADER!r}")


def _fields(text: str, line_no: int) -> list[str]:
    text = text.removesuffix("\r")
    if '"' not in text:
        fields = text.split(",")
    else:  # quoted fields: the csv module's rules, one physical line only
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            raise MalformedFile(line_no, None, text, f"is not a CSV line ({exc})") from None
    if len(fields) != len(FIELDS):
        raise MalformedFile(line_no, None, text, f"has {len(fields)} fields, expected {len(FIELDS)} ({HEADER})")
    return fields


def _text(value: str, line_no: int, field: str) -> str:
    if len(value) > MAX_TEXT or not _TEXT.fullmatch(value):
        raise MalformedFile(line_no, field, value, f"must be 1-{MAX_TEXT} printable characters without spaces")
    return value


def _amount(value: str, line_no: int, field: str, minimum: int) -> int:
    if not _INT.fullmatch(value) or not minimum <= int(value) <= MAX_AMOUNT:
        raise MalformedFile(line_no, field, value,
                            f"is not an integer number of minor units in {minimum}..{MAX_AMOUNT}")  # fmt: skip
    return int(value)


def _one_of(value: str, line_no: int, field: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise MalformedFile(line_no, field, value, f"is not one of {', '.join(sorted(allowed))}")
    return value


def parse_at(value: str, line_no: int) -> datetime:
    """ISO 8601 in UTC (``Z`` or ``+00:00``), to the second or finer; a real instant."""
    match = _AT.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        year, month, day, hour, minute, second, fraction = match.groups()
        micro = int((fraction or "0").ljust(6, "0"))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=UTC)
    except ValueError:
        raise MalformedFile(line_no, "settled_at", value, "is not an ISO 8601 UTC time "
                            "(YYYY-MM-DDTHH:MM:SS[.fff]Z)") from None  # fmt: skip


def parse_line(text: str, line_no: int) -> Line:
    """A data line (``line_no`` >= 2), or MalformedFile naming the first bad field and its value."""
    psp_reference, reference, kind, amount, currency, fee, status, settled_at = _fields(text, line_no)
    return Line(
        line_no,
        _text(psp_reference, line_no, "psp_reference"),
        _text(reference, line_no, "reference"),
        _one_of(kind, line_no, "type", TYPES),
        _amount(amount, line_no, "amount", 1),
        _one_of(currency, line_no, "currency", _CURRENCIES),
        _amount(fee, line_no, "fee", 0),
        _one_of(status, line_no, "status", STATUSES),
        parse_at(settled_at, line_no),
    )


_CURRENCIES = frozenset(CURRENCIES)


def check_day(line: Line, day: date) -> None:
    """A day's file holds that UTC day's movements only."""
    if line.settled_at.date() != day:
        shown = line.settled_at.isoformat().replace("+00:00", "Z")
        raise MalformedFile(line.line_no, "settled_at", shown, f"is not on {day.isoformat()}, the file's day")


def parse_day(text: str) -> date:
    """``YYYY-MM-DD`` exactly, a real date; ValueError naming the value otherwise."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text, re.ASCII):
        raise ValueError(f"date {text!r} is not YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"date {text!r} is not a real date") from None
