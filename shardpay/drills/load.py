"""A drill's load: a careful client moving money between wallets on every shard, recording every attempt.

Each worker sends a transfer under a fresh ``Idempotency-Key`` and, on anything a client should retry (a 503,
a 409 ``idempotency_key_in_use``, a 429, a reset connection, a timeout), sends it again with the same key after
``Retry-After`` (at least) and a jittered backoff, until it has a final answer or its deadline passes. A few
requests in ten are reads (the balance and the entries list), retried the same way. Every attempt is recorded
with its send and answer times, so the drill can say when errors began and when service was whole again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# What a careful client retries: the outcome is unknown or the server asks to be asked again.
RETRY_STATUSES = frozenset({409, 429, 502, 503, 504})
GIVE_UP_AFTER = 90.0  # seconds a request is retried before the client stops trying
CLIENT_TIMEOUT = 12.0  # above the gateway's 10 s request deadline


@dataclass(frozen=True)
class Wallet:
    id: str
    shard: int


@dataclass(frozen=True)
class Attempt:
    sent: float  # seconds since the load started
    answered: float
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str | None = None  # the exception's class when status is None, or the API error code


@dataclass
class Request:
    kind: str  # "transfer", "balance", "entries"
    shards: frozenset[int]
    key: str | None = None
    body: dict[str, Any] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    final: int | None = None  # the last status (201, 402, ...), None if it gave up without an answer
    acked: dict[str, Any] | None = None  # a transfer's 201 body


class Load:
    """Workers until ``stop``; ``requests`` holds everything they sent."""

    def __init__(
        self,
        url: str,
        api_key: str,
        wallets: list[Wallet],
        home: Callable[[str], int],
        workers: int = 8,
        pause: float = 0.02,
    ) -> None:
        """``home``: the shard an idempotency key's record lives on (a transfer touches it too)."""
        self._url = url
        self._home = home
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._wallets = wallets
        self._workers = workers
        self._pause = pause
        self._origin = time.monotonic()
        self._keys = 0
        self.requests: list[Request] = []

    def now(self) -> float:
        return time.monotonic() - self._origin

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=self._workers * 2, max_keepalive_connections=self._workers * 2)
        async with httpx.AsyncClient(base_url=self._url, headers=self._headers, timeout=CLIENT_TIMEOUT,
                                     limits=limits) as http:  # fmt: skip
            await asyncio.gather(*(self._worker(http, stop, n) for n in range(self._workers)))

    async def _worker(self, http: httpx.AsyncClient, stop: asyncio.Event, number: int) -> None:
        rng = random.Random(number)
        while not stop.is_set():
            request = self._next(rng)
            self.requests.append(request)
            await self._until_final(http, request, rng)
            await asyncio.sleep(self._pause)

    def _next(self, rng: random.Random) -> Request:
        source, destination = rng.sample(self._wallets, 2)
        roll = rng.random()
        if roll < 0.1:
            return Request("balance", frozenset({source.shard}), body={"path": f"/v1/wallets/{source.id}"})
        if roll < 0.2:
            return Request("entries", frozenset({source.shard}), body={"path": f"/v1/wallets/{source.id}/entries"})
        self._keys += 1
        body = {"source": source.id, "destination": destination.id, "amount": rng.randint(1, 100), "currency": "USD"}
        key = f"drill-{int(self._origin * 1000)}-{self._keys}"
        return Request("transfer", frozenset({source.shard, destination.shard, self._home(key)}), key=key, body=body)

    async def _until_final(self, http: httpx.AsyncClient, request: Request, rng: random.Random) -> None:
        started = self.now()
        for attempt_number in range(1, 10_000):
            attempt, retry_after, body = await self._send(http, request)
            request.attempts.append(attempt)
            request.final = attempt.status
            if attempt.status is not None and attempt.status not in RETRY_STATUSES:
                if attempt.status == 201 and request.kind == "transfer":
                    request.acked = body
                return
            if self.now() - started > GIVE_UP_AFTER:
                request.final = None
                return
            backoff = rng.uniform(0, min(2.0, 0.05 * 2**attempt_number))
            await asyncio.sleep(max(retry_after, backoff))

    async def _send(self, http: httpx.AsyncClient, request: Request) -> tuple[Attempt, float, Any]:
        sent = self.now()
        try:
            if request.kind == "transfer":
                assert request.key is not None
                response = await http.post("/v1/transfers", json=request.body, headers={"Idempotency-Key": request.key})
            else:
                assert request.body is not None
                response = await http.get(request.body["path"])
        except httpx.HTTPError as exc:
            return Attempt(sent, self.now(), None, type(exc).__name__), 0.2, None
        body = _json(response)
        code = body.get("error", {}).get("code") if isinstance(body, dict) and "error" in body else None
        retry_after = _seconds(response.headers.get("Retry-After"))
        return Attempt(sent, self.now(), response.status_code, code), retry_after, body


def _seconds(raw: str | None) -> float:
    try:
        return max(0.0, float(raw or 0))
    except ValueError:  # an HTTP date: not what shardpay sends; retry on the backoff alone
        return 0.0


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
