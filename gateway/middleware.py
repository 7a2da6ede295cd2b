"""Pure ASGI middleware: request ids, the cap on requests in flight, the body cap, one log line and metrics per
request, and the 500 guard."""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import Any

import orjson
from opentelemetry.trace import SpanKind
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import http, metrics
from gateway.logs import log
from shardpay import ids, tracing
from shardpay.domain.errors import ApiError

# Past ``max_requests`` in flight in this worker (SHARDPAY_MAX_REQUESTS), a request is answered at once rather than
# queued behind the others: memory stays bounded, and the client retries with its key. /healthz is still answered
# (the process is alive, only busy); /readyz is not, so a load balancer sends the traffic elsewhere.
_BUSY = ApiError.unavailable("server_overloaded", "The server is at capacity; retry with the same key.")


def _request_span(scope: Scope, rid: str) -> contextlib.AbstractContextManager[Any]:
    """The request's span, in the trace its request id makes; a caller's own traceparent becomes a link."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    carried = tracing.link_from({"traceparent": http.header(scope, b"traceparent")} if http.header(
        scope, b"traceparent") else None)  # fmt: skip
    return tracing.span(f"{scope['method']} {scope['path']}", request_id=rid, kind=SpanKind.SERVER, links=carried,
                        **{"http.request.method": scope["method"]})  # fmt: skip


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 128 and text.isascii() and text.isprintable():
                return text
    return "req_" + ids.random_hex(12)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class RequestContext:
    """Outermost layer: every response gets ``X-Request-Id``; an ``ApiError`` that escaped becomes its JSON
    error; anything else is a bug, logged with its traceback and answered 500."""

    def __init__(self, app: ASGIApp, log_requests: bool = True, max_requests: int | None = None) -> None:
        self.app = app
        self.log_requests = log_requests
        self.max_requests = max_requests
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        scope[http.REQUEST_ID] = rid
        started = time.perf_counter()
        status = 500
        sent = False

        async def tagged(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status, sent = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        self.inflight += 1
        request_span = _request_span(scope, rid)
        traced = request_span.__enter__()
        try:
            if self.max_requests is not None and self.inflight > self.max_requests and scope["path"] != "/healthz":
                raise _BUSY
            length = _declared_length(scope)
            # The largest any route takes; each route holds its own body to its own limit (gateway.body).
            if length is not None and length > http.MAX_BATCH_BODY:
                raise http.too_large(http.MAX_BATCH_BODY)
            await self.app(scope, receive, tagged)
        except ApiError as error:
            status = error.status
            await http.error_response(error, rid)(scope, receive, tagged)
        except ClientDisconnect:
            status = 499  # the client went away mid-request; nothing to answer, and not our error
        except Exception:
            log("error", request_id=rid, path=scope["path"], traceback=traceback.format_exc())
            if not sent:
                body = ApiError(500, "api_error", "internal_error", "An internal error occurred.").body(rid)
                await http.json_response(500, orjson.dumps(body))(scope, receive, tagged)
        finally:
            self.inflight -= 1
            if traced is not None:
                traced.set_attribute("http.route", scope.get(http.ROUTE, "unmatched"))
                traced.set_attribute("http.response.status_code", status)
            request_span.__exit__(None, None, None)
            self._record(scope, rid, status, time.perf_counter() - started)

    def _record(self, scope: Scope, rid: str, status: int, seconds: float) -> None:
        route = scope.get(http.ROUTE, "unmatched")
        metrics.observe(scope["method"], route, status, seconds)
        if self.log_requests:
            traced = {"trace_id": tracing.trace_id_hex(rid)} if tracing.enabled() else {}
            log("request", request_id=rid, merchant=scope.get(http.MERCHANT), method=scope["method"], route=route,
                status=status, duration_ms=round(seconds * 1000, 2), **traced)  # fmt: skip
