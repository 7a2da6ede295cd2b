"""Locust load test for shardpay: merchants creating wallets, moving money and reading their ledgers.

Each simulated user is a merchant's server using one API key. On start it creates a few wallets of its own,
then loops over weighted tasks: transfers between pre-funded wallets (most), double-submitted transfers
(the merchant lost the response and sends the request again with the same key), balance reads, ledger
entry pages, transfer status reads, and now and then a new wallet.

Like a careful merchant it:

- sends every POST with an ``Idempotency-Key`` and, after a timeout, a connection error, a 503 or a 409,
  sends the *same* request with the *same* key again (bounded attempts, exponential backoff with jitter,
  ``Retry-After`` when the gateway gives one);
- on a 429 sleeps ``Retry-After`` seconds and tries again; the 429 is its own row in the stats
  (``<route> [429]``), never a failure;
- treats 402 ``insufficient_funds`` as a business outcome (a success in Locust's stats, counted).

Every final response is checked against ``/work/shared/API.md`` (status, JSON shape, ``X-Request-Id``)
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

Seed funded wallets (creates them through the API, credits them through the services layer, so it needs the
gateway's ``SHARDPAY_*`` database settings, e.g. ``SHARDPAY_DB_PREFIX``)::

    SHARDPAY_API_KEY=sk_... python -m loadtest.locustfile seed --wallets 200 --amount 1000000 \\
        --host http://127.0.0.1:8000 --out loadtest/results/funded_wallets.txt
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import logging
import os
import random
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # The seed helper runs on asyncio (asyncpg, httpx); keep Locust's gevent monkey-patching out of that process.
    os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

import gevent
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

log = logging.getLogger("shardpay.locust")

DEFAULT_HOST = "http://127.0.0.1:8000"
_INFO_FLAGS = {"-h", "--help", "-V", "--version", "-l", "--list", "--list-commands"}


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SystemExit(f"{name}={raw!r} must be >= {minimum}")
    return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SystemExit(f"{name}={raw!r} must be > 0")
    return value


def _env_wait() -> tuple[float, float]:
    raw = os.environ.get("SHARDPAY_LOCUST_WAIT", "0.1,1.0")
    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        raise SystemExit(f"SHARDPAY_LOCUST_WAIT={raw!r} must be 'MIN,MAX' seconds, e.g. '0.1,1.0'") from None
    if not 0 <= low <= high:
        raise SystemExit(f"SHARDPAY_LOCUST_WAIT={raw!r} needs 0 <= MIN <= MAX")
    return low, high


def api_key() -> str:
    key = os.environ.get("SHARDPAY_API_KEY", "").strip()
    if not key:
        raise SystemExit(
            "SHARDPAY_API_KEY is not set. Export the merchant's secret key (sk_...) printed by "
            "`shardpay merchants create --name NAME --rate 100000 --burst 100000`, e.g. "
            "`export SHARDPAY_API_KEY=sk_...`."
        )
    return key


def load_funded_wallets(path: str | None) -> tuple[str, ...]:
    """Wallet ids from ``path``: one per line; blank lines and ``#`` comments are skipped."""
    if not path:
        return ()
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"SHARDPAY_FUNDED_WALLETS={path!r}: no such file (make one with the seed helper)")
    wallets = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        if not item.startswith("wal_"):
            raise SystemExit(f"{path}:{number}: {item!r} is not a wallet id (wal_...)")
        wallets.append(item)
    if len(wallets) < 2:
        raise SystemExit(f"SHARDPAY_FUNDED_WALLETS={path!r} holds {len(wallets)} wallet ids; transfers need >= 2")
    return tuple(dict.fromkeys(wallets))


@dataclass(frozen=True)
class Config:
    api_key: str
    funded: tuple[str, ...]
    currency: str
    wallets_per_user: int
    max_amount: int
    timeout: float
    max_attempts: int
    max_rate_limited: int
    wait: tuple[float, float]

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            api_key=api_key(),
            funded=load_funded_wallets(os.environ.get("SHARDPAY_FUNDED_WALLETS")),
            currency=os.environ.get("SHARDPAY_CURRENCY", "USD").strip().upper(),
            wallets_per_user=_env_int("SHARDPAY_LOCUST_WALLETS_PER_USER", 3, minimum=0),
            max_amount=_env_int("SHARDPAY_LOCUST_MAX_AMOUNT", 1000),
            timeout=_env_float("SHARDPAY_LOCUST_TIMEOUT", 12.0),
            max_attempts=_env_int("SHARDPAY_LOCUST_MAX_ATTEMPTS", 6),
            max_rate_limited=_env_int("SHARDPAY_LOCUST_MAX_RATE_LIMITED", 20),
            wait=_env_wait(),
        )


# Fail fast, once, before Locust forks workers; `locust -f ... --help` works without a key.
CONFIG: Config | None = None if _INFO_FLAGS & set(sys.argv) or __name__ == "__main__" else Config.from_env()


def config() -> Config:
    global CONFIG
    if CONFIG is None:
        CONFIG = Config.from_env()
    return CONFIG


# ---------------------------------------------------------------------------------------------------------------
# Outcomes that are not requests: counted per process, sent to the master with each worker report, summed there.

OUTCOMES: Counter[str] = Counter()
_ENVIRONMENT: Environment | None = None
OUTCOME_HELP = {
    "transfer.succeeded": "transfers answered 201 succeeded",
    "transfer.processing": "transfers answered 201 processing (cross-shard, second leg pending)",
    "transfer.insufficient_funds": "transfers answered 402 insufficient_funds (business outcome, not a failure)",
    "transfer.resend_replayed": "double-submitted transfers answered with the stored response",
    "wallet.created": "wallets created",
    "replayed": "responses with Idempotent-Replayed: true (all routes)",
    "replayed.after_retry": "replays that answered a retry after a timeout/503/409",
    "rate_limited": "429 answers (slept Retry-After, then retried)",
    "rate_limited.gave_up": "requests abandoned after SHARDPAY_LOCUST_MAX_RATE_LIMITED 429s",
    "retry.timeout": "timeouts retried (same Idempotency-Key)",
    "retry.connection_error": "connection errors retried (same Idempotency-Key)",
    "retry.503": "503 answers retried (same Idempotency-Key)",
    "retry.409": "409 idempotency_key_in_use answers retried",
    "gave_up": "requests abandoned after SHARDPAY_LOCUST_MAX_ATTEMPTS tries",
}


def count(outcome: str, n: int = 1) -> None:
    OUTCOMES[outcome] += n


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    global _ENVIRONMENT
    _ENVIRONMENT = environment
    if isinstance(environment.runner, MasterRunner):
        return
    cfg = config()
    if not cfg.funded:
        log.warning(
            "SHARDPAY_FUNDED_WALLETS is not set: users transfer between their own empty wallets, so transfers "
            "answer 402 insufficient_funds. Seed funded wallets: python -m loadtest.locustfile seed --help"
        )


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    data["shardpay_outcomes"] = dict(OUTCOMES)
    OUTCOMES.clear()


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    OUTCOMES.update(data.get("shardpay_outcomes", {}))


@events.quit.add_listener
def _on_quit(exit_code: int, **_kwargs: Any) -> None:
    """After the master got the workers' final reports: print the outcomes and write ``<csv>_outcomes.csv``."""
    environment = _ENVIRONMENT
    if environment is None or isinstance(environment.runner, WorkerRunner):
        return
    rows = sorted(OUTCOMES.items())
    width = max((len(name) for name, _ in rows), default=10)
    lines = ["", "shardpay outcomes (not HTTP requests; summed over all workers)", "-" * (width + 12)]
    lines += [f"{name:<{width}} {value:>10}" for name, value in rows] or ["(none)"]
    print("\n".join(lines), flush=True)
    options = environment.parsed_options
    prefix = getattr(options, "csv_prefix", None) if options is not None else None
    if prefix:
        with open(f"{prefix}_outcomes.csv", "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["Outcome", "Count", "Meaning"])
            for name, value in rows:
                writer.writerow([name, value, OUTCOME_HELP.get(name, "")])


# ---------------------------------------------------------------------------------------------------------------
# The merchant.


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    replayed: bool


# (status, body) -> a problem to report as the request's failure, or None when the response is right.
Check = Callable[[int, dict[str, Any]], str | None]


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


def _error_code(body: dict[str, Any]) -> str | None:
    error = body.get("error")
    return error.get("code") if isinstance(error, dict) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Merchant(FastHttpUser):
    """A merchant's backend: wallets for its sellers, transfers between them, balance and ledger reads."""

    host = DEFAULT_HOST
    # Read once at import (CONFIG is None only for `--help` and the seed helper, which start no users).
    network_timeout = CONFIG.timeout if CONFIG else 12.0
    connection_timeout = min(network_timeout, 5.0)
    default_headers = {"Authorization": f"Bearer {CONFIG.api_key}"} if CONFIG else None
    wait_time = between(*(CONFIG.wait if CONFIG else (0.1, 1.0)))

    def on_start(self) -> None:
        self.config = config()
        self.own: list[str] = []
        self.transfers: deque[str] = deque(maxlen=50)
        # Drawn per user, after Locust forked its workers (`--processes`): keys never collide across processes.
        self.key_prefix = f"locust-{uuid.uuid4().hex}"
        self.keys = itertools.count()
        for _ in range(self.config.wallets_per_user):
            self.create_wallet()

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
        headers = {"Idempotency-Key": key} if key else None
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
            r.failure(f"unexpected {status} {_error_code(body) or ''}".rstrip())
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

    # -- checks (API.md) ------------------------------------------------------------------------------------

    def wallet_check(self, wallet_id: str | None = None, new: bool = False) -> Check:
        def check(status: int, body: dict[str, Any]) -> str | None:
            if not str(body.get("id", "")).startswith("wal_") or body.get("object") != "wallet":
                return f"not a wallet: {body}"
            if wallet_id is not None and body["id"] != wallet_id:
                return f"asked for {wallet_id}, got {body['id']}"
            if not (_is_int(body.get("available")) and _is_int(body.get("pending"))):
                return f"available/pending are not integers: {body}"
            if body["available"] < 0 or body["pending"] < 0:
                return f"negative balance: {body}"
            if new and (body["available"] != 0 or body.get("currency") != self.config.currency):
                return f"a new wallet must be empty and in {self.config.currency}: {body}"
            return None

        return check

    @staticmethod
    def transfer_check(request: dict[str, Any] | None = None) -> Check:
        def check(status: int, body: dict[str, Any]) -> str | None:
            if not str(body.get("id", "")).startswith("tr_") or body.get("object") != "transfer":
                return f"not a transfer: {body}"
            allowed = ("succeeded", "processing") if request else ("succeeded", "processing", "failed")
            if body.get("status") not in allowed:
                return f"unexpected transfer status {body.get('status')!r}"
            if request is not None:
                for field in ("source", "destination", "amount", "currency"):
                    if body.get(field) != request[field]:
                        return f"{field} is {body.get(field)!r}, sent {request[field]!r}"
            return None

        return check

    @staticmethod
    def insufficient_funds(status: int, body: dict[str, Any]) -> str | None:
        error = body.get("error")
        if not isinstance(error, dict) or error.get("type") != "payment_error":
            return f"402 without a payment_error: {body}"
        if error.get("code") != "insufficient_funds":
            return f"402 {error.get('code')!r}, expected insufficient_funds"
        return None

    # -- tasks ----------------------------------------------------------------------------------------------

    def create_wallet(self) -> None:
        key = self.new_key("wallet")
        request = {"currency": self.config.currency, "reference": f"locust-{key}"}
        reply = self.send("POST", "/v1/wallets", "/v1/wallets", {201: self.wallet_check(new=True)}, request, key)
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
        ok = {201: self.transfer_check(request), 402: self.insufficient_funds}
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
            self.send("GET", f"/v1/wallets/{wallet_id}", "/v1/wallets/{id}", {200: self.wallet_check(wallet_id)})

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
            {200: self.entries_check(wallet_id, limit or 10, None)},
        )
        if page is not None and page.body["has_more"] and random.random() < 0.3:
            after = page.body["data"][-1]["id"]
            self.send(
                "GET",
                f"/v1/wallets/{wallet_id}/entries?limit={limit or 10}&starting_after={after}",
                "/v1/wallets/{id}/entries?starting_after",
                {200: self.entries_check(wallet_id, limit or 10, after)},
            )

    @staticmethod
    def entries_check(wallet_id: str, limit: int, after: str | None) -> Check:
        def check(status: int, body: dict[str, Any]) -> str | None:
            data = body.get("data")
            if body.get("object") != "list" or not isinstance(data, list) or not isinstance(body.get("has_more"), bool):
                return f"not a list: {str(body)[:200]}"
            if len(data) > limit or (body["has_more"] and len(data) != limit):
                return f"{len(data)} entries for limit={limit}, has_more={body['has_more']}"
            numbers = []
            for entry in data:
                entry_id = entry.get("id") if isinstance(entry, dict) else None
                if not isinstance(entry_id, str) or not entry_id.startswith("ent_") or not entry_id[4:].isdigit():
                    return f"not a ledger entry: {entry}"
                if entry.get("wallet") != wallet_id or not _is_int(entry.get("amount")) or entry["amount"] == 0:
                    return f"entry {entry_id} is not a non-zero integer amount of {wallet_id}: {entry}"
                numbers.append(int(entry_id[4:]))
            if numbers != sorted(numbers, reverse=True) or len(set(numbers)) != len(numbers):
                return "entries are not newest first"
            if after is not None and numbers and numbers[0] >= int(after[4:]):
                return f"page after {after} starts at ent_{numbers[0]}"
            return None

        return check

    @task(1)
    def get_transfer(self) -> None:
        if not self.transfers:
            return
        transfer_id = random.choice(self.transfers)

        def check(status: int, body: dict[str, Any]) -> str | None:
            problem = self.transfer_check()(status, body)
            if problem is None and body["id"] != transfer_id:
                return f"asked for {transfer_id}, got {body['id']}"
            return problem

        self.send("GET", f"/v1/transfers/{transfer_id}", "/v1/transfers/{id}", {200: check})

    @task(1)
    def create_wallet_task(self) -> None:
        self.create_wallet()


# ---------------------------------------------------------------------------------------------------------------
# `python -m loadtest.locustfile seed`: create N wallets through the API and fund them with operator credits.


async def seed(host: str, key: str, wallets: int, amount: int, currency: str, concurrency: int) -> list[str]:
    import httpx

    from shardpay.config import Settings
    from shardpay.domain.errors import ApiError
    from shardpay.services import wallets as wallet_service
    from shards.pools import open_shards

    settings = Settings.from_env()
    run = uuid.uuid4().hex[:12]
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {key}"}

    async def create(http: httpx.AsyncClient, n: int) -> str:
        idempotency_key = f"locust-seed-{run}-{n}"
        body = {"currency": currency, "reference": f"locust-funded-{run}-{n}"}
        for attempt in range(10):
            try:
                response = await http.post("/v1/wallets", json=body, headers={"Idempotency-Key": idempotency_key})
            except httpx.TransportError:
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status_code == 201:
                wallet_id: str = response.json()["id"]
                return wallet_id
            if response.status_code in (409, 429, 503):
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            raise SystemExit(f"POST /v1/wallets answered {response.status_code}: {response.text}")
        raise SystemExit("POST /v1/wallets kept failing; is the gateway up?")

    async def one(http: httpx.AsyncClient, shards: Any, n: int) -> str:
        async with gate:
            wallet_id = await create(http, n)
            try:
                await wallet_service.credit(shards, wallet_id, amount, "locust load test funding")
            except ApiError:
                raise SystemExit(
                    f"{wallet_id} was created by {host} but is not in the databases of "
                    f"SHARDPAY_DB_PREFIX={settings.db_prefix!r}: run the seed with the gateway's SHARDPAY_* settings"
                ) from None
            return wallet_id

    async with (
        httpx.AsyncClient(base_url=host, headers=headers, timeout=30) as http,
        open_shards(settings, pool_max=max(2, min(concurrency, 8))) as shards,
    ):
        return list(await asyncio.gather(*(one(http, shards, n) for n in range(wallets))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.locustfile", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("seed", help="create and fund wallets, write their ids to a file")
    cmd.add_argument("--wallets", type=int, default=200, help="how many wallets (default 200)")
    cmd.add_argument("--amount", type=int, default=1_000_000, help="credit per wallet, minor units (default 10^6)")
    cmd.add_argument("--currency", default=os.environ.get("SHARDPAY_CURRENCY", "USD"))
    cmd.add_argument("--host", default=DEFAULT_HOST, help=f"the gateway (default {DEFAULT_HOST})")
    cmd.add_argument("--out", default="loadtest/results/funded_wallets.txt", help="file to write (overwritten)")
    cmd.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if args.wallets < 2 or not 1 <= args.amount <= 10**15:
        parser.error("need --wallets >= 2 and 1 <= --amount <= 10^15")
    started = time.monotonic()
    ids = asyncio.run(
        seed(args.host.rstrip("/"), api_key(), args.wallets, args.amount, args.currency.upper(), args.concurrency)
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{wallet_id}\n" for wallet_id in ids))
    summary = {
        "file": str(out),
        "wallets": len(ids),
        "amount": args.amount,
        "currency": args.currency.upper(),
        "seconds": round(time.monotonic() - started, 2),
        "next": f"export SHARDPAY_FUNDED_WALLETS={out}",
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
