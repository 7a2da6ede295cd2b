"""Signed webhook POSTs to merchants, each reduced to a result: never an exception, never a secret in it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from events import signing
from events.addresses import WebhookAddressRefused

USER_AGENT = "shardpay-webhooks/1"


@dataclass(frozen=True)
class Target:
    url: str = field(repr=False)  # may carry credentials in its userinfo
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None = None  # the HTTP status, if a response came back
    error: str | None = None  # the failure's class name, if none did
    detail: str | None = None  # for a refused address: which addresses and why (never the URL)


@dataclass(frozen=True)
class Sender:
    """Signs and posts, each POST bounded by ``deadline`` seconds in total."""

    deadline: float

    async def post(self, client: httpx.AsyncClient, target: Target, body: bytes, now: int) -> Result:
        """POST ``body`` unchanged (the signature covers its exact bytes) through ``client`` (the merchant's:
        ``events.lanes``); a 2xx in time is success. The deadline starts here, so it counts this POST's own
        connection and exchange, not any wait for a slot before it."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            signing.HEADER: signing.sign(target.secret, body, now),
        }
        try:
            # A total deadline: httpx's own timeouts bound each phase, not a server that trickles bytes.
            async with asyncio.timeout(self.deadline):
                return await _send(client, target.url, body, headers)
        except WebhookAddressRefused as exc:
            return Result(ok=False, error=type(exc).__name__, detail=str(exc))
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError) as exc:
            return Result(ok=False, error=type(exc).__name__)


async def _send(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> Result:
    async with client.stream("POST", url, content=body, headers=headers) as response:
        status = response.status_code  # the body is never read: nothing in it matters, and it may be huge
    return Result(ok=200 <= status < 300, status=status)
