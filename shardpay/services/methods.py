"""Whose payment method a ``pm_`` token is: the PSP knows which hosted session made it, and shardpay registered
that session (``shardpay.services.checkout``) under a reference that names the merchant. So a payment with a
token the PSP does not know, or one another merchant's customer saved, is refused (404) before anything is
stored or charged.

A token's owner never changes, so each is asked of the PSP once per process and remembered. If the PSP cannot
say in time (it is down, or its breaker is open), the payment is accepted unverified: during an outage payments
wait in 'processing' rather than being refused, and the charge itself then decides (an unknown token fails the
order with the PSP's code).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import psp
from shardpay.domain.errors import ApiError
from shardpay.resilience import Breaker

LOOKUP_TIMEOUT = 1.0  # seconds a payment waits for the PSP's answer about its token
CACHED = 100_000  # tokens remembered per process


def reference(merchant_id: str, checkout_id: str) -> str:
    """The reference a checkout session is registered under at the PSP."""
    return f"{merchant_id}:{checkout_id}"


def owner(session_reference: str | None) -> str | None:
    merchant, _, checkout_id = (session_reference or "").partition(":")
    return merchant if merchant.startswith("mer_") and checkout_id.startswith("cs_") else None


class PaymentMethods:
    def __init__(self, client: psp.Psp, breaker: Breaker) -> None:
        self._client = client
        self._breaker = breaker
        self._owners: OrderedDict[str, str | None] = OrderedDict()

    async def check(self, merchant_id: str, method: str, request_id: str) -> None:
        """Return if ``method`` is the merchant's (or the PSP cannot say now); 404 if it is not."""
        if method not in self._owners:
            if not self._breaker.allow():
                return
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT):
                    found = await self._client.find_payment_method(method, request_id=request_id)
            except (TimeoutError, psp.PspUnavailable, psp.PspOutcomeUnknown, psp.PspMalformed):
                self._breaker.record(False)
                return
            except psp.PspRejected:
                self._breaker.record(True)
                found = None
            else:
                self._breaker.record(True)
            self._remember(method, owner(found.reference) if found else None)
        self._owners.move_to_end(method)
        if self._owners[method] != merchant_id:
            raise ApiError.not_found("payment_method", method)

    def _remember(self, method: str, merchant_id: str | None) -> None:
        self._owners[method] = merchant_id
        while len(self._owners) > CACHED:
            self._owners.popitem(last=False)
