"""Locust load test for shardpay: merchants creating wallets, moving money and reading their ledgers, taking
payments through the PSP and paying out.

Each simulated user is a merchant's server using one API key. On start it creates a few wallets of its own and
gets a saved card (a ``pm_`` token) through the PSP's hosted page as its customer would, then loops over weighted
tasks: transfers between pre-funded wallets (most), double-submitted transfers (the merchant lost the response
and sends the request again with the same key), balance reads, ledger entry pages, transfer status reads, now and
then a new wallet, and the money in and out of ``loadtest/locust_psp.py``: payments of 1-3 orders to its own
wallets, payouts to a bank account, refunds of succeeded orders, and follow-up reads of each until it is final.

Like a careful merchant it:

- sends every POST with an ``Idempotency-Key`` and, after a timeout, a connection error, a 503 or a 409,
  sends the *same* request with the *same* key again (bounded attempts, exponential backoff with jitter,
  ``Retry-After`` when the gateway gives one);
- on a 429 sleeps ``Retry-After`` seconds and tries again; the 429 is its own row in the stats
  (``<route> [429]``), never a failure;
- treats 402 ``insufficient_funds`` as a business outcome (a success in Locust's stats, counted).

Every final response is checked against ``shared/API.md`` beside the repository (status, JSON shape, ``X-Request-Id``)
through ``catch_response``. Outcomes that are not HTTP requests (replays, 402s, retries, 429s, give-ups) are
counted per process, summed on the master in distributed runs, printed at the end and written to
``<csv prefix>_outcomes.csv`` when ``--csv`` is given.

Configuration (environment variables; the host comes from Locust's ``--host``, default http://127.0.0.1:8000):

- ``SHARDPAY_API_KEY`` (required): the merchant's secret key, from ``shardpay merchants create``.
- ``SHARDPAY_FUNDED_WALLETS``: a file of funded wallet ids of that merchant, one per line, shared by all users
  (make one with the ``seed`` helper below). Without it transfers can only get 402.
- ``SHARDPAY_CURRENCY`` (``USD``): the currency of the wallets the users create; must match the funded ones.
- ``SHARDPAY_LOCUST_WALLETS_PER_USER`` (3); ``SHARDPAY_LOCUST_MAX_AMOUNT`` (1000, minor units per transfer);
  ``SHARDPAY_LOCUST_TIMEOUT`` (12 s client timeout: above the gateway's 10 s ``SHARDPAY_REQUEST_TIMEOUT``, so a
  slow request normally ends in the gateway's 503); ``SHARDPAY_LOCUST_MAX_ATTEMPTS`` (6 tries per request on
  timeouts/503/409, spread over ~10-17 s: longer than a running request may hold its key);
  ``SHARDPAY_LOCUST_MAX_RATE_LIMITED`` (20 waits on 429 per request); ``SHARDPAY_LOCUST_WAIT`` (``0.1,1.0``:
  think time between tasks, seconds; ``0,0`` for a closed-loop maximum-throughput run).
- ``SHARDPAY_PSP_PUBLIC_URL`` (unset): where the PSP's hosted pages are; when set, every checkout session's
  ``redirect_url`` must be there. ``SHARDPAY_LOCUST_CARD`` (``4242424242424242``): the test card the customers
  type; ``SHARDPAY_LOCUST_FOLLOW_FOR`` (60 s): how long a payment, payout or refund is followed while processing.

Seed funded wallets (creates them through the API, credits them through the services layer, so it needs the
gateway's ``SHARDPAY_*`` database settings, e.g. ``SHARDPAY_DB_PREFIX``)::

    SHARDPAY_API_KEY=sk_... python -m loadtest.locustfile seed --wallets 200 --amount 1000000 \\
        --host http://127.0.0.1:8000 --out loadtest/results/funded_wallets.txt
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

if __name__ == "__main__":
    # The seed helper runs on asyncio (asyncpg, httpx); keep Locust's gevent monkey-patching out of that process.
    os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

import gevent
from locust import FastHttpUser, between, task
from locust.contrib.fasthttp import ResponseContextManager

from loadtest import locust_psp
from loadtest.locust_checks import (
    Check,
    Reply,
    entries_check,
    error_code,
    insufficient_funds,
    transfer_check,
    wallet_check,
)  # fmt: skip
from loadtest.locust_config import DEFAULT_HOST, Config, config
from loadtest.locust_outcomes import count

_INFO_FLAGS = {"-h", "--help", "-V", "--version", "-l", "--list", "--list-commands"}
# Fail fast, once, before Locust forks workers; `locust -f ... --help` and the seed helper need no settings.
CONFIG: Config | None = None if _INFO_FLAGS & set(sys.argv) or __name__ == "__main__" else config()


def _retry_after(resp: ResponseContextManager, default: float) -> float:
    raw = resp.headers.get("Retry-After") if resp.headers is not None else None
    try:
        return max(0.0, float(str(raw))) if raw is not None else default
    except ValueError:
        return default


def _network_reason(error: BaseException | None) -> str:
    # geventhttpclient wraps the socket's error: RetriesExceeded(url, tries, original=TimeoutError(...)).
    original = getattr(error, "original", error)
    if isinstance(original, TimeoutError | gevent.Timeout):
        return "timeout"
    return "connection_error"


class Merchant(FastHttpUser):
    """A merchant's backend: wallets for its sellers, transfers between them, balance and ledger reads."""

    host = DEFAULT_HOST
    # Read once at import (CONFIG is None only for `--help` and the seed helper, which start no users).
    network_timeout = CONFIG.timeout if CONFIG else 12.0
    connection_timeout = min(network_timeout, 5.0)
    wait_time = between(*(CONFIG.wait if CONFIG else (0.1, 1.0)))

    def on_start(self) -> None:
        self.config = config()
        self.own: list[str] = []
        self.transfers: deque[str] = deque(maxlen=50)
        # Drawn per user, after Locust forked its workers (`--processes`): keys never collide across processes.
        self.key_prefix = f"locust-{uuid.uuid4().hex}"
        self.keys = itertools.count()
        # Sent to the gateway only (send()), never to the PSP's hosted page: the key is the merchant's secret.
        self.auth = f"Bearer {self.config.api_key}"
        for _ in range(self.config.wallets_per_user):
            self.create_wallet()
        self.flows = locust_psp.Flows(method=locust_psp.payment_method(self))

    # -- helpers --------------------------------------------------------------------------------------------

    def new_key(self, kind: str) -> str:
        return f"{self.key_prefix}-{kind}-{next(self.keys)}"

    def send(
        self,
        method: str,
        path: str,
        name: str,
        ok: Mapping[int, Check],
        body: dict[str, Any] | None = None,
        key: str | None = None,
        must_replay: bool = False,
    ) -> Reply | None:
        """One logical request: retried on timeouts, connection errors, 503 and 409 (same key), waits out 429s.

        Every attempt is one entry in Locust's stats: the final one under ``name`` (checked against ``ok``), a 429
        under ``name [429]`` and a 409 under ``name [409]`` (successes: the merchant did the right thing), a
        timeout/connection error/503 that is retried under ``name`` as a failure (the gateway was slow or down).
        """
        headers = {"Authorization": self.auth} | ({"Idempotency-Key": key} if key else {})
        attempts = rate_limited = 0
        retried = False
        while True:
            attempts += 1
            wait = 0.0
            with self.client.request(method, path, name=name, json=body, headers=headers, catch_response=True) as r:
                status = r.status_code
                if status == 429:
                    attempts -= 1  # waiting out the rate limit is not a failed try
                    rate_limited += 1
                    count("rate_limited")
                    r.request_meta["name"] = f"{name} [429]"
                    r.success()
                    if rate_limited > self.config.max_rate_limited:
                        count("rate_limited.gave_up")
                        return None
                    wait = _retry_after(r, 1.0) + random.uniform(0, 0.1)
                elif status in (0, 503) or (status == 409 and key is not None):
                    reason = _network_reason(r.error) if status == 0 else str(status)
                    if attempts >= self.config.max_attempts:
                        count("gave_up")
                        r.failure(f"gave up after {attempts} tries: {reason}")
                        return None
                    count(f"retry.{reason}")
                    retried = True
                    if status == 409:
                        r.request_meta["name"] = f"{name} [409]"
                        r.success()
                    else:
                        r.failure(f"{reason}, retried" + (" with the same Idempotency-Key" if key else ""))
                    # Exponential backoff with jitter (0.25-0.5 s, 0.5-1 s, ... up to 4-8 s), never under Retry-After.
                    ceiling = min(8.0, 0.5 * 2 ** (attempts - 1))
                    wait = max(_retry_after(r, 0.0), random.uniform(ceiling / 2, ceiling))
                else:
                    return self._final(r, ok, retried, must_replay)
            gevent.sleep(wait)

    def _final(
        self, r: ResponseContextManager, ok: Mapping[int, Check], retried: bool, must_replay: bool
    ) -> Reply | None:
        status = r.status_code
        try:
            body = json.loads(r.content or b"")
        except ValueError:
            r.failure(f"{status}: response is not JSON")
            return None
        if not isinstance(body, dict):
            r.failure(f"{status}: response is not a JSON object")
            return None
        if r.headers is None or not r.headers.get("X-Request-Id"):
            r.failure(f"{status}: no X-Request-Id header")
            return None
        check = ok.get(status)
        if check is None:
            r.failure(f"unexpected {status} {error_code(body) or ''}".rstrip())
            return None
        problem = check(status, body)
        if problem:
            r.failure(f"{status}: {problem}")
            return None
        replayed = r.headers.get("Idempotent-Replayed") == "true"
        if must_replay and not replayed:
            r.failure(f"{status}: a resend with the same Idempotency-Key lacks Idempotent-Replayed: true")
            return None
        if replayed:
            count("replayed")
            if retried:
                count("replayed.after_retry")
        r.success()
        return Reply(status, body, replayed)

    def pick_wallet(self) -> str | None:
        pool = self.config.funded + tuple(self.own)
        return random.choice(pool) if pool else None

    def pick_pair(self) -> tuple[str, str] | None:
        funded = self.config.funded
        if not funded:  # nothing to spend: the user's own (empty) wallets, 402 all the way
            if len(self.own) < 2:
                return None
            source, destination = random.sample(self.own, 2)
            return source, destination
        source = random.choice(funded)
        if self.own and random.random() < 0.15:  # pay out to one of this merchant's new sellers
            return source, random.choice(self.own)
        destination = random.choice(funded)
        while destination == source:
            destination = random.choice(funded)
        return source, destination

    # -- tasks ----------------------------------------------------------------------------------------------

    def create_wallet(self) -> None:
        key = self.new_key("wallet")
        request = {"currency": self.config.currency, "reference": f"locust-{key}"}
        reply = self.send(
            "POST", "/v1/wallets", "/v1/wallets", {201: wallet_check(self.config.currency, new=True)}, request, key
        )
        if reply is not None:
            count("wallet.created")
            self.own.append(reply.body["id"])
            del self.own[:-20]  # a merchant's working set of new sellers

    def transfer(self) -> tuple[dict[str, Any], str, Reply] | None:
        pair = self.pick_pair()
        if pair is None:
            return None
        source, destination = pair
        request = {
            "source": source,
            "destination": destination,
            "amount": random.randint(1, self.config.max_amount),
            "currency": self.config.currency,
            "description": "locust",
        }
        key = self.new_key("transfer")
        ok = {201: transfer_check(request), 402: insufficient_funds}
        reply = self.send("POST", "/v1/transfers", "/v1/transfers", ok, request, key)
        if reply is None:
            return None
        if reply.status == 402:
            count("transfer.insufficient_funds")
        else:
            count(f"transfer.{reply.body['status']}")
            if reply.body["status"] == "processing" or random.random() < 0.2:
                self.transfers.append(reply.body["id"])
        return request, key, reply

    @task(10)
    def transfer_task(self) -> None:
        self.transfer()

    @task(1)
    def transfer_sent_twice(self) -> None:
        """The merchant lost the response and sends the same request again: the stored response, no money moves."""
        first = self.transfer()
        if first is None:
            return
        request, key, reply = first

        def same(status: int, body: dict[str, Any]) -> str | None:
            if status != reply.status or body != reply.body:
                return f"resend got {status} {body}, the first answer was {reply.status} {reply.body}"
            return None

        ok = {201: same, 402: same}
        if self.send("POST", "/v1/transfers", "/v1/transfers (resend)", ok, request, key, must_replay=True):
            count("transfer.resend_replayed")

    @task(4)
    def get_wallet(self) -> None:
        wallet_id = self.pick_wallet()
        if wallet_id is not None:
            self.send(
                "GET",
                f"/v1/wallets/{wallet_id}",
                "/v1/wallets/{id}",
                {200: wallet_check(self.config.currency, wallet_id)},
            )

    @task(3)
    def list_entries(self) -> None:
        wallet_id = self.pick_wallet()
        if wallet_id is None:
            return
        limit = random.choice([None, None, 5, 25, 100])
        query = "" if limit is None else f"?limit={limit}"
        page = self.send(
            "GET",
            f"/v1/wallets/{wallet_id}/entries{query}",
            "/v1/wallets/{id}/entries",
            {200: entries_check(wallet_id, limit or 10, None)},
        )
        if page is not None and page.body["has_more"] and random.random() < 0.3:
            after = page.body["data"][-1]["id"]
            self.send(
                "GET",
                f"/v1/wallets/{wallet_id}/entries?limit={limit or 10}&starting_after={after}",
                "/v1/wallets/{id}/entries?starting_after",
                {200: entries_check(wallet_id, limit or 10, after)},
            )

    @task(1)
    def get_transfer(self) -> None:
        if not self.transfers:
            return
        transfer_id = random.choice(self.transfers)

        def check(status: int, body: dict[str, Any]) -> str | None:
            problem = transfer_check()(status, body)
            if problem is None and body["id"] != transfer_id:
                return f"asked for {transfer_id}, got {body['id']}"
            return problem

        self.send("GET", f"/v1/transfers/{transfer_id}", "/v1/transfers/{id}", {200: check})

    @task(1)
    def create_wallet_task(self) -> None:
        self.create_wallet()

    # -- money in and out through the PSP (loadtest/locust_psp.py) ------------------------------------------

    @task(3)
    def pay_task(self) -> None:
        locust_psp.pay(self, self.flows)

    @task(3)
    def follow_up_task(self) -> None:
        locust_psp.follow_up(self, self.flows)

    @task(1)
    def payout_task(self) -> None:
        locust_psp.payout(self, self.flows)

    @task(2)
    def refund_task(self) -> None:
        locust_psp.refund(self, self.flows)


if __name__ == "__main__":
    from loadtest.locust_seed import main

    main()
