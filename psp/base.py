"""What shardpay needs from a payment service provider: the interface, its results and its errors.

An adapter (``psp/<name>.py``, chosen by ``SHARDPAY_PSP_ADAPTER``) implements ``Psp`` over the PSP's own API.
Every call that moves money takes the caller's idempotency key, so a retry with the same key is always safe.
The errors say what the caller may do next:

- ``PspUnavailable``: the PSP did nothing (a 5xx, a refused connection, an outage, a 429), or it was a read:
  retry later with the same key.
- ``PspOutcomeUnknown``: the request was sent and no answer came (a timeout, a reset after sending). The PSP
  may have done it. Resolve it by looking up by key (``find_charge`` ...), never by charging again blindly.
  It is its own class, not a flag on ``PspUnavailable``, so that an ``except PspUnavailable`` written for
  "retry later" cannot swallow it by accident.
- ``PspRejected``: a 4xx: permanent for these parameters; carries the PSP's code and message.
- ``PspMalformed``: a 2xx whose body is not what the contract says (or contradicts the request): a bug or a
  lie, for the dead-letter path, never retried blindly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, Protocol

ChargeStatus = Literal["succeeded", "pending", "failed"]
RefundStatus = Literal["succeeded", "pending", "failed"]
PayoutStatus = Literal["paid", "pending", "failed"]


class PspError(Exception):
    """Base of every error an adapter raises."""


class PspUnavailable(PspError):
    """Nothing was done (or it was only a read): retry later with the same key."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PspOutcomeUnknown(PspError):
    """Sent, but no answer: look the key up before doing anything else."""


class PspRejected(PspError):
    """A permanent refusal (4xx) with the PSP's own code, message and parameter."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param


class PspMalformed(PspError):
    """A success answer that breaks the contract."""


class InvalidSignature(PspError):
    """A webhook whose signature is missing, wrong or stale: answer 400 and change nothing."""


@dataclass(frozen=True)
class HostedSession:
    id: str
    token: str
    url: str


@dataclass(frozen=True)
class PaymentMethod:
    """A saved card: ``reference`` is that of the hosted session it was made on (None if none)."""

    id: str
    reference: str | None


@dataclass(frozen=True)
class Charge:
    id: str
    status: ChargeStatus
    failure_code: str | None
    amount: int
    currency: str
    reference: str
    payment_method: str


@dataclass(frozen=True)
class Refund:
    id: str
    status: RefundStatus
    failure_code: str | None
    charge: str
    amount: int
    currency: str
    reference: str


@dataclass(frozen=True)
class Payout:
    id: str
    status: PayoutStatus
    failure_code: str | None
    amount: int
    currency: str
    destination: str
    reference: str


@dataclass(frozen=True)
class SessionCompleted:
    """A customer paid on the hosted page: ``payment_method`` can now be charged."""

    id: str
    payment_method: str
    reference: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Dispute:
    id: str
    charge: str
    amount: int
    currency: str
    reference: str | None


EventObject = Charge | Refund | Payout | SessionCompleted | Dispute


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook. ``object`` is None for a type this adapter does not know (ack it, ignore it)."""

    id: str
    type: str
    created: int
    object: EventObject | None
    raw: dict[str, Any] = field(repr=False)


class Psp(Protocol):
    """One PSP. ``request_id`` (the caller's X-Request-Id) travels with every call, for the PSP's logs."""

    async def create_hosted_session(self, amount: int, currency: str, return_url: str, reference: str, nonce: str,
                                    *, request_id: str | None = None) -> HostedSession: ...  # fmt: skip

    async def find_payment_method(self, payment_method: str, *, request_id: str | None = None
                                  ) -> PaymentMethod | None: ...  # fmt: skip

    async def charge(self, payment_method: str, amount: int, currency: str, reference: str, key: str,
                     *, request_id: str | None = None) -> Charge: ...  # fmt: skip

    async def find_charge(self, key: str, *, request_id: str | None = None) -> Charge | None: ...

    async def refund(self, charge_id: str, amount: int | None, reference: str, key: str,
                     *, request_id: str | None = None) -> Refund: ...  # fmt: skip

    async def find_refund(self, key: str, *, request_id: str | None = None) -> Refund | None: ...

    async def payout(self, amount: int, currency: str, destination: str, reference: str, key: str,
                     *, request_id: str | None = None) -> Payout: ...  # fmt: skip

    async def find_payout(self, key: str, *, request_id: str | None = None) -> Payout | None: ...

    def settlement_file(self, day: date, *, request_id: str | None = None) -> AsyncIterator[str]:
        """The day's settlement file as CSV lines (header first), streamed, never held whole in memory."""
        ...

    def verify_webhook(self, header: str | None, raw_body: bytes, now: float) -> WebhookEvent:
        """The event, if ``header`` signs ``raw_body`` within 300 s of ``now``; InvalidSignature otherwise."""
        ...

    async def aclose(self) -> None: ...
