"""The adapter for shardpay's PSP simulator (``../shared/PSP.md``), over HTTP with one pooled client.

Every call is bounded by ``SHARDPAY_PSP_TIMEOUT`` in total (connect, send, wait, read). How a failure maps to
an error class (``psp.base``): nothing sent (refused, pool exhausted, connect timeout) is ``PspUnavailable``;
sent and no answer (a read timeout, a reset or close after the request went out, the total timeout) is
``PspOutcomeUnknown`` for a call that moves money and ``PspUnavailable`` for a read, which has no outcome.
The settlement file is streamed line by line; its bound is per read, not in total (100,000 lines take a while).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import orjson
from opentelemetry.trace import SpanKind

from events.signing import verify
from psp import parse
from psp.base import (
    Charge,
    HostedSession,
    InvalidSignature,
    PaymentMethod,
    Payout,
    Psp,
    PspMalformed,
    PspOutcomeUnknown,
    PspRejected,
    PspUnavailable,
    Refund,
    WebhookEvent,
)  # fmt: skip
from shardpay import tracing
from shardpay.config import Settings

SIGNATURE_HEADER = "PSP-Signature"
# Nothing was sent: safe to call a failure "nothing done".
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# Retryable refusals: rate limited, or a request with this key is still running.
_LATER = frozenset({409, 429})


def create(settings: Settings) -> Psp:
    """The factory ``psp.connect`` calls (typed as ``Psp``, so mypy checks the class against the interface)."""
    return SimulatorPsp(settings)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _rejected(response: httpx.Response) -> PspRejected:
    try:
        error = orjson.loads(response.content)["error"]
        return PspRejected(response.status_code, str(error["code"]), str(error["message"]), error.get("param"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return PspRejected(response.status_code, f"http_{response.status_code}", response.text[:200])


def _refusal(response: httpx.Response) -> Exception:
    """The error for a non-2xx answer."""
    if response.status_code >= 500 or response.status_code in _LATER:
        return PspUnavailable(f"the PSP answered {response.status_code}", _retry_after(response))
    return _rejected(response)


class SimulatorPsp:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout = settings.psp_timeout
        self._secret = settings.psp_webhook_secret
        self._http = httpx.AsyncClient(
            base_url=settings.psp_url, trust_env=False, timeout=settings.psp_timeout, transport=transport,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            headers={"Authorization": f"Bearer {settings.psp_secret_key}"},
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, *, moves_money: bool, request_id: str | None,
                    key: str | None = None, body: dict[str, Any] | None = None,
                    query: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
        headers = {k: v for k, v in (("X-Request-Id", request_id), ("Idempotency-Key", key)) if v is not None}
        content = orjson.dumps(body) if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            with tracing.span(f"psp {method} {path}", kind=SpanKind.CLIENT, method=method):
                tracing.inject(headers)
                async with asyncio.timeout(self._timeout):
                    return await self._http.request(method, path, content=content, params=query, headers=headers)
        except _NOT_SENT as exc:
            raise PspUnavailable(f"the PSP is unreachable: {exc.__class__.__name__}") from exc
        except (httpx.HTTPError, TimeoutError) as exc:
            what = f"no answer from the PSP for {method} {path}: {exc.__class__.__name__}"
            raise (PspOutcomeUnknown(what) if moves_money else PspUnavailable(what)) from exc

    async def _create(self, path: str, key: str, body: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        response = await self._send("POST", path, moves_money=True, request_id=request_id, key=key, body=body)
        if not response.is_success:
            raise _refusal(response)
        return _json(response)

    async def _find(self, path: str, key: str, request_id: str | None) -> dict[str, Any] | None:
        query = {"idempotency_key": key}
        response = await self._send("GET", path, moves_money=False, request_id=request_id, query=query)
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise _refusal(response)
        return _json(response)

    async def create_hosted_session(self, amount: int, currency: str, return_url: str, reference: str, nonce: str,
                                    *, request_id: str | None = None) -> HostedSession:  # fmt: skip
        body = {"amount": amount, "currency": currency, "return_url": return_url, "reference": reference}
        return parse.hosted_session(await self._create("/v1/hosted_sessions", nonce, body, request_id))

    async def find_payment_method(self, payment_method: str, *, request_id: str | None = None
                                  ) -> PaymentMethod | None:  # fmt: skip
        response = await self._send("GET", f"/v1/payment_methods/{payment_method}", moves_money=False,
                                    request_id=request_id)  # fmt: skip
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise _refusal(response)
        return parse.payment_method(_json(response))

    async def charge(self, payment_method: str, amount: int, currency: str, reference: str, key: str,
                     *, request_id: str | None = None) -> Charge:  # fmt: skip
        body = {"payment_method": payment_method, "amount": amount, "currency": currency, "reference": reference}
        result = parse.charge(await self._create("/v1/charges", key, body, request_id))
        parse.matches(result, body)
        return result

    async def find_charge(self, key: str, *, request_id: str | None = None) -> Charge | None:
        found = await self._find("/v1/charges", key, request_id)
        return None if found is None else parse.charge(found)

    async def refund(self, charge_id: str, amount: int | None, reference: str, key: str,
                     *, request_id: str | None = None) -> Refund:  # fmt: skip
        body: dict[str, Any] = {"charge": charge_id, "reference": reference}
        if amount is not None:
            body["amount"] = amount
        result = parse.refund(await self._create("/v1/refunds", key, body, request_id))
        parse.matches(result, {"charge": charge_id, "amount": amount, "reference": reference})
        return result

    async def find_refund(self, key: str, *, request_id: str | None = None) -> Refund | None:
        found = await self._find("/v1/refunds", key, request_id)
        return None if found is None else parse.refund(found)

    async def payout(self, amount: int, currency: str, destination: str, reference: str, key: str,
                     *, request_id: str | None = None) -> Payout:  # fmt: skip
        body = {"amount": amount, "currency": currency, "destination": destination, "reference": reference}
        result = parse.payout(await self._create("/v1/payouts", key, body, request_id))
        parse.matches(result, body)
        return result

    async def find_payout(self, key: str, *, request_id: str | None = None) -> Payout | None:
        found = await self._find("/v1/payouts", key, request_id)
        return None if found is None else parse.payout(found)

    async def settlement_file(self, day: date, *, request_id: str | None = None) -> AsyncIterator[str]:
        headers = {"X-Request-Id": request_id} if request_id else {}
        try:
            async with self._http.stream("GET", f"/v1/settlements/{day.isoformat()}.csv", headers=headers) as answer:
                if not answer.is_success:
                    await answer.aread()
                    raise _refusal(answer)
                async for line in answer.aiter_lines():
                    if line:
                        yield line
        except httpx.HTTPError as exc:
            raise PspUnavailable(f"the settlement file of {day} broke off: {exc.__class__.__name__}") from exc

    def verify_webhook(self, header: str | None, raw_body: bytes, now: float) -> WebhookEvent:
        if not header or not verify(self._secret, header, raw_body, now):
            raise InvalidSignature(f"bad or stale {SIGNATURE_HEADER} (or none)")
        try:
            event = parse.obj(orjson.loads(raw_body))
        except orjson.JSONDecodeError as exc:
            raise PspMalformed(f"a signed webhook whose body is not JSON: {exc}") from None
        event_type = _field_str(event, "type")
        data = parse.obj(event.get("data"))
        created = event.get("created")
        if not isinstance(created, int) or isinstance(created, bool):
            raise PspMalformed(f"webhook field 'created' should be int, got {created!r}")
        obj = parse.event_object(event_type, parse.obj(data.get("object")))
        return WebhookEvent(_field_str(event, "id"), event_type, created, obj, event)


def _field_str(event: dict[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise PspMalformed(f"webhook field '{name}' should be a string, got {value!r}")
    return value


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        return parse.obj(orjson.loads(response.content))
    except orjson.JSONDecodeError as exc:
        raise PspMalformed(f"a {response.status_code} whose body is not JSON: {exc}") from None
