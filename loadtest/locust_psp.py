"""The Locust merchant's money in and out through the PSP (``loadtest/locustfile.py`` runs these as tasks).

At start each user gets a ``pm_`` token as its customer would: a checkout session through the gateway, then the
PSP's hosted page fetched and posted with a test card (the same HTTP client, never carrying the merchant's API
key to the PSP), the token read from the redirect to the shop's ``return_url``, which is not followed. Then:

- a payment of 1-3 orders to the user's own wallets, charged to that token;
- a payout from a funded wallet to ``ba_locust`` (which the PSP pays), now and then to ``ba_locust_fail``
  (which it fails with ``account_closed``);
- a refund of part, or the rest, of an order that succeeded;
- a follow-up, as a merchant's poller would: GETs of up to three of them that are still ``processing``, each
  looked at again after 0.4, 0.8, 1.6 and then every 2 s until it is final, checking the final status it had to
  reach (a payout to ``ba_locust_fail`` must fail, any other must be paid).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import gevent
from locust.contrib.fasthttp import FastHttpSession, ResponseContextManager

from loadtest.locust_checks import (
    Check,
    Reply,
    checkout_check,
    insufficient_funds,
    payment_check,
    payout_check,
    refund_check,
    refund_refused,
)  # fmt: skip
from loadtest.locust_config import Config
from loadtest.locust_outcomes import count

PAYOUT_TO = "ba_locust"
PAYOUT_FAILS_TO = "ba_locust_fail"  # the PSP fails payouts to an account ending in "fail"
FAILING_PAYOUTS = 0.05
LOOKS_PER_ROUND = 3
PATHS = {"payment": "/v1/payments/{id}", "payout": "/v1/payouts/{id}", "refund": "/v1/refunds/{id}"}


class Merchant(Protocol):
    """What these tasks need of the Locust user (``loadtest.locustfile.Merchant``)."""

    config: Config
    own: list[str]
    client: FastHttpSession

    def new_key(self, kind: str) -> str: ...

    def send(
        self, method: str, path: str, name: str, ok: Mapping[int, Check], body: dict[str, Any] | None = None,
        key: str | None = None, must_replay: bool = False,
    ) -> Reply | None: ...  # fmt: skip


@dataclass
class Waiting:
    """Something the PSP is still working on, to be looked at again until it is final."""

    kind: str  # payment | payout | refund
    id: str
    expect: str | None  # the final status it must reach, or None for any
    since: float = field(default_factory=time.monotonic)
    due: float = 0.0
    looks: int = 0


@dataclass
class PaidOrder:
    id: str
    amount: int
    refunded: int = 0


@dataclass
class Flows:
    """One user's side of the PSP: its saved card, what it waits on, the orders it may refund."""

    method: str | None = None
    waiting: deque[Waiting] = field(default_factory=lambda: deque(maxlen=200))
    paid: deque[PaidOrder] = field(default_factory=lambda: deque(maxlen=50))


# ----------------------------------------------------------------------------------------------- the saved card


def payment_method(user: Merchant) -> str | None:
    """A checkout session, the hosted page's form, the card posted: the ``pm_`` from the redirect, or None."""
    request = {"amount": 1000, "currency": user.config.currency, "return_url": "https://shop.example/locust/done"}
    ok = {201: checkout_check(user.config.psp_public_url)}
    session = user.send("POST", "/v1/checkout_sessions", "/v1/checkout_sessions", ok, request,
                        user.new_key("checkout"))  # fmt: skip
    if session is None:
        count("payment_method.unavailable")
        return None
    url = session.body["redirect_url"]
    if browse(user, "GET", url, None, _shows_form) is None:
        count("payment_method.unavailable")
        return None
    method = browse(user, "POST", url, {"card_number": user.config.card}, _redirects_with_method)
    count("payment_method.created" if method else "payment_method.unavailable")
    return method


def _shows_form(r: ResponseContextManager) -> tuple[str | None, str | None]:
    if r.status_code != 200 or 'name="card_number"' not in (r.text or ""):
        return f"the hosted page answered {r.status_code} without its card form", None
    return None, "form"


def _redirects_with_method(r: ResponseContextManager) -> tuple[str | None, str | None]:
    location = str((r.headers.get("Location") if r.headers is not None else None) or "")
    method = parse_qs(urlsplit(location).query).get("payment_method", [""])[0]
    if r.status_code != 303 or not method.startswith("pm_"):
        return f"paying answered {r.status_code}, Location {location[:100]!r}: no pm_ token", None
    return None, method


def browse(user: Merchant, method: str, url: str, form: dict[str, str] | None, read: Any) -> str | None:
    """One step of the customer's browser on the PSP's page (HTML, no API key, redirects not followed), retried
    on a connection error or a 503 like any request; ``read(response)`` gives (problem, value)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else None
    for attempt in range(1, user.config.max_attempts + 1):
        with user.client.request(method, url, name="/pay/{token}", data=urlencode(form) if form else None,
                                 headers=headers, catch_response=True, allow_redirects=False) as r:  # fmt: skip
            if r.status_code in (0, 503) and attempt < user.config.max_attempts:
                count("retry.hosted_page")
                r.failure(f"{r.status_code or 'connection error'}, retried")
                gevent.sleep(max(_retry_after(r), random.uniform(0.25, 0.5) * attempt))
                continue
            problem, value = read(r)
            if problem:
                r.failure(problem)
                return None
            r.success()
            return str(value)
    return None


def _retry_after(r: ResponseContextManager) -> float:
    raw = r.headers.get("Retry-After") if r.headers is not None else None
    try:
        return max(0.0, float(str(raw))) if raw is not None else 0.0
    except ValueError:
        return 0.0


# ------------------------------------------------------------------------------------------------------- tasks


def pay(user: Merchant, flows: Flows) -> None:
    """A payment of 1-3 orders to the user's own wallets."""
    if flows.method is None or not user.own:
        return
    orders = [{"destination": random.choice(user.own), "amount": random.randint(100, max(100, user.config.max_amount)),
               "currency": user.config.currency} for _ in range(random.randint(1, 3))]  # fmt: skip
    request = {"payment_method": flows.method, "orders": orders}
    reply = user.send("POST", "/v1/payments", "/v1/payments", {201: payment_check(request)}, request,
                      user.new_key("payment"))  # fmt: skip
    if reply is not None:
        count("payment.created")
        _wait_for(flows, "payment", reply.body, None)


def payout(user: Merchant, flows: Flows) -> None:
    """A payout from a funded wallet (the user's own if none is funded) to a bank account."""
    sources = user.config.funded or tuple(user.own)
    if not sources:
        return
    fails = random.random() < FAILING_PAYOUTS
    request = {"source": random.choice(sources), "amount": random.randint(1, user.config.max_amount),
               "currency": user.config.currency, "destination": PAYOUT_FAILS_TO if fails else PAYOUT_TO}  # fmt: skip
    ok = {201: payout_check(request), 402: insufficient_funds}
    reply = user.send("POST", "/v1/payouts", "/v1/payouts", ok, request, user.new_key("payout"))
    if reply is None:
        return
    if reply.status == 402:
        count("payout.insufficient_funds")
        return
    count("payout.created")
    _wait_for(flows, "payout", reply.body, "failed" if fails else "paid")


def refund(user: Merchant, flows: Flows) -> None:
    """A refund of part of a succeeded order, or (one time in five) of all that is left of it. With none known
    yet, the merchant first looks at the payments it is waiting on (a follow-up round)."""
    left = [order for order in flows.paid if order.refunded < order.amount]
    if not left:
        follow_up(user, flows)
        left = [order for order in flows.paid if order.refunded < order.amount]
    if not left:
        return
    order = random.choice(left)
    rest = order.amount - order.refunded
    amount = None if random.random() < 0.2 else random.randint(1, rest)
    request = {"payment_order": order.id} | ({} if amount is None else {"amount": amount})
    ok = {201: refund_check(request), 402: insufficient_funds, 400: refund_refused}
    reply = user.send("POST", "/v1/refunds", "/v1/refunds", ok, request, user.new_key("refund"))
    if reply is None:
        return
    if reply.status != 201:
        count("refund.insufficient_funds" if reply.status == 402 else "refund.refused")
        return
    order.refunded += reply.body["amount"]
    count("refund.created")
    _wait_for(flows, "refund", reply.body, None)


def follow_up(user: Merchant, flows: Flows) -> None:
    """A poller's round: GET up to ``LOOKS_PER_ROUND`` of the things that are due for a look, longest waiting
    first; each is counted once final, or given up on after ``SHARDPAY_LOCUST_FOLLOW_FOR`` seconds (counted as
    ``<kind>.still_processing``)."""
    now = time.monotonic()
    due = [w for w in flows.waiting if w.due <= now][:LOOKS_PER_ROUND]
    for item in due:
        flows.waiting.remove(item)
        _look(user, flows, item)


def _look(user: Merchant, flows: Flows, item: Waiting) -> None:
    reply = user.send("GET", PATHS[item.kind].format(id=item.id), PATHS[item.kind], {200: _final_check(item)})
    if reply is None:
        return
    status = reply.body["status"]
    if status != "processing":
        count(f"{item.kind}.{status}")
        _remember_paid(flows, item.kind, reply.body)
        return
    now = time.monotonic()
    if now - item.since > user.config.follow_for:
        count(f"{item.kind}.still_processing")
        return
    item.looks += 1
    item.due = now + min(2.0, 0.2 * 2**item.looks)  # 0.4 s, 0.8 s, 1.6 s, then every 2 s
    flows.waiting.append(item)


def _final_check(item: Waiting) -> Check:
    if item.kind == "payment":
        return payment_check(payment_id=item.id)
    if item.kind == "payout":
        return payout_check(payout_id=item.id, expect=item.expect)
    return refund_check(refund_id=item.id)


def _wait_for(flows: Flows, kind: str, body: dict[str, Any], expect: str | None) -> None:
    if body["status"] == "processing":
        flows.waiting.append(Waiting(kind, body["id"], expect, due=time.monotonic() + 0.2))
        return
    count(f"{kind}.{body['status']}")  # a replay of one that is final already
    _remember_paid(flows, kind, body)


def _remember_paid(flows: Flows, kind: str, body: dict[str, Any]) -> None:
    if kind == "payment":
        flows.paid.extend(PaidOrder(o["id"], o["amount"]) for o in body["orders"] if o["status"] == "succeeded")
