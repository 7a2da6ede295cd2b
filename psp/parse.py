"""Reading the simulator's JSON objects into ``psp.base`` results, strictly: anything off is ``PspMalformed``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from psp.base import (
    Charge,
    ChargeStatus,
    Dispute,
    EventObject,
    HostedSession,
    PaymentMethod,
    Payout,
    PayoutStatus,
    PspMalformed,
    Refund,
    RefundStatus,
    SessionCompleted,
)  # fmt: skip

T = TypeVar("T")


def _field(obj: dict[str, Any], name: str, kind: type[T], nullable: bool = False) -> T:
    value = obj.get(name)
    if value is None and nullable:
        return cast(T, None)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PspMalformed(f"field '{name}' should be {kind.__name__}, got {value!r}")
    return value


def _id(obj: dict[str, Any], name: str, prefix: str) -> str:
    value = _field(obj, name, str)
    if not value.startswith(prefix + "_"):
        raise PspMalformed(f"field '{name}' should be a '{prefix}_' id, got {value!r}")
    return value


def _status(obj: dict[str, Any], allowed: frozenset[str]) -> str:
    status = _field(obj, "status", str)
    if status not in allowed:
        raise PspMalformed(f"field 'status' should be one of {sorted(allowed)}, got {status!r}")
    if status == "failed" and not obj.get("failure_code"):
        raise PspMalformed("a failed object must carry a 'failure_code'")
    return status


def obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise PspMalformed(f"expected a JSON object, got {type(body).__name__}")
    return body


def hosted_session(o: dict[str, Any]) -> HostedSession:
    return HostedSession(_id(o, "id", "hs"), _field(o, "token", str), _field(o, "url", str))


def payment_method(o: dict[str, Any]) -> PaymentMethod:
    return PaymentMethod(_id(o, "id", "pm"), _field(o, "reference", str, True))


def charge(o: dict[str, Any]) -> Charge:
    status = cast(ChargeStatus, _status(o, frozenset({"succeeded", "pending", "failed"})))
    return Charge(_id(o, "id", "ch"), status, _field(o, "failure_code", str, True), _field(o, "amount", int),
                  _field(o, "currency", str), _field(o, "reference", str), _id(o, "payment_method", "pm"))  # fmt: skip


def refund(o: dict[str, Any]) -> Refund:
    status = cast(RefundStatus, _status(o, frozenset({"succeeded", "pending", "failed"})))
    return Refund(_id(o, "id", "rf"), status, _field(o, "failure_code", str, True), _id(o, "charge", "ch"),
                  _field(o, "amount", int), _field(o, "currency", str), _field(o, "reference", str))  # fmt: skip


def payout(o: dict[str, Any]) -> Payout:
    status = cast(PayoutStatus, _status(o, frozenset({"paid", "pending", "failed"})))
    return Payout(_id(o, "id", "pyo"), status, _field(o, "failure_code", str, True), _field(o, "amount", int),
                  _field(o, "currency", str), _id(o, "destination", "ba"), _field(o, "reference", str))  # fmt: skip


def session_completed(o: dict[str, Any]) -> SessionCompleted:
    return SessionCompleted(_id(o, "id", "hs"), _id(o, "payment_method", "pm"), _field(o, "reference", str),
                            _field(o, "amount", int), _field(o, "currency", str))  # fmt: skip


def dispute(o: dict[str, Any]) -> Dispute:
    return Dispute(_id(o, "id", "dp"), _id(o, "charge", "ch"), _field(o, "amount", int), _field(o, "currency", str),
                   _field(o, "reference", str, True))  # fmt: skip


_BY_TYPE: dict[str, Callable[[dict[str, Any]], EventObject]] = {
    "hosted_session.completed": session_completed, "charge.succeeded": charge, "charge.failed": charge,
    "charge.dispute.created": dispute, "refund.succeeded": refund, "refund.failed": refund,
    "payout.paid": payout, "payout.failed": payout,
}  # fmt: skip


def event_object(event_type: str, o: dict[str, Any]) -> EventObject | None:
    parse = _BY_TYPE.get(event_type)
    return None if parse is None else parse(o)


def matches(result: Charge | Refund | Payout, asked: dict[str, Any]) -> None:
    """A created object must be the one asked for: an answer for another amount or reference is a lie."""
    for name, wanted in asked.items():
        if wanted is not None and getattr(result, name) != wanted:
            raise PspMalformed(f"the PSP answered {name}={getattr(result, name)!r} for a request of {wanted!r}")
