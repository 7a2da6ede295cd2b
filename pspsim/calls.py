"""The layer around every call: request id, the fault knobs, auth, the JSON error, stats and one log line.

Faults apply to ``/v1`` calls only (the customer's ``/pay`` pages and ``/sim`` stay up, so a drill can be
steered and ended). In order: latency, outage (503), reset (an RST, nothing done), error (500 or 503,
nothing done), then the call itself; under ``timeout_after_commit_rate`` its answer is held for
``timeout_hold_ms`` after the work has committed.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import re
import secrets
import sys
import time
import traceback

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pspsim.db import UNREACHABLE
from pspsim.faults import rolls
from pspsim.http import REQUEST_ID, SimError, json, unavailable
from pspsim.protocol import reset
from pspsim.state import Sim

_LABELS = (
    (re.compile(r"^/v1/settlements/[^/]*$"), "/v1/settlements/{date}.csv"),
    (re.compile(r"^/pay/[^/]+$"), "/pay/{token}"),
    (re.compile(r"^/(v1/(hosted_sessions|charges|refunds|payouts)|sim/[a-z-]+)$"), ""),
)


def endpoint(method: str, path: str) -> str:
    """``METHOD /path/template``: a bounded set of names for the stats, whatever paths callers try."""
    for pattern, label in _LABELS:
        if pattern.match(path):
            return f"{method} {label or path}"
    return f"{method} other"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _request_id(scope: Scope) -> str:
    given = _header(scope, b"x-request-id")
    if given and len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return "pspreq_" + secrets.token_hex(12)


def _authenticated(scope: Scope, secret_key: str) -> bool:
    given = _header(scope, b"authorization") or ""
    return hmac.compare_digest(given.encode(), f"Bearer {secret_key}".encode())


class CallLayer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sim: Sim = scope["app"].state.sim
        rid = scope[REQUEST_ID] = _request_id(scope)
        name = endpoint(scope["method"], scope["path"])
        started = time.perf_counter()
        answer = "499"
        hold = 0.0

        async def tagged(message: Message) -> None:
            nonlocal answer
            if message["type"] == "http.response.start":
                answer = str(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                if hold:
                    # Counted now, when the work is done: the caller gives up long before the answer goes.
                    answer = "timeout"
                    sim.count(name, answer)
                    await asyncio.sleep(hold)
            await send(message)

        async def fail(error: SimError) -> None:
            if answer == "499":  # nothing sent yet (a stream that broke off midway can only be cut)
                await error.response(rid)(scope, receive, tagged)

        try:
            if scope["path"].startswith("/v1/"):
                injected = await self._inject(sim, scope, receive, tagged)
                if injected:
                    answer = injected
                    return
                hold = sim.faults.timeout_hold_ms / 1000 if rolls(sim.faults.timeout_after_commit_rate) else 0.0
            await self.app(scope, receive, tagged)
        except SimError as error:
            await fail(error)
        except UNREACHABLE:
            await fail(unavailable("database_unavailable", "The PSP's database is unavailable."))
        except Exception:
            _log({"event": "error", "request_id": rid, "endpoint": name, "traceback": traceback.format_exc()})
            await fail(SimError(500, "api_error", "internal_error", "An internal error occurred."))
        finally:
            if answer != "timeout":
                sim.count(name, answer)
            if sim.settings.log_requests:
                duration = round((time.perf_counter() - started) * 1000, 2)
                _log({"event": "psp_call", "endpoint": name, "status": answer, "request_id": rid,
                      "duration_ms": duration})  # fmt: skip

    async def _inject(self, sim: Sim, scope: Scope, receive: Receive, send: Send) -> str | None:
        """Answer (or reset) the call as the faults say; the stats label of what was done, or None to go on."""
        faults = sim.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        rid: str = scope[REQUEST_ID]
        if faults.outage:
            await unavailable("outage", "The PSP is down (simulated outage).").response(rid)(scope, receive, send)
            return "outage"
        if rolls(faults.reset_rate):
            await reset(scope, receive)
            return "reset"
        if rolls(faults.error_rate):
            error = random.choice((SimError(500, "api_error", "internal_error", "Simulated PSP error."),
                                   unavailable("service_unavailable", "Simulated PSP error.")))  # fmt: skip
            await error.response(rid)(scope, receive, send)
            return str(error.status)
        if not _authenticated(scope, sim.settings.psp_secret_key):
            error = SimError(401, "authentication_error", "api_key_invalid", "Invalid or missing API key.")
            await error.response(rid)(scope, receive, send)
            return "401"
        if scope["method"] == "POST" and rolls(faults.malformed_rate):
            await json(200, {"object": "malformed", "detail": "Simulated: not the object asked for."})(
                scope, receive, send
            )
            return "malformed"
        return None


def _log(line: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps({"ts": round(time.time(), 3), **line}).decode() + "\n")
