"""JSON out: responses and errors, straight to ASGI or as Starlette responses (bodies in: ``gateway.body``)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope, Send

from shardpay.domain.errors import ApiError

MAX_BODY = 64 * 1024
# A transfer batch's 1,000 items need more than 64 KiB (about 130 bytes each without descriptions, up to about
# 1.4 KB with): its route takes up to this much, the one exception to API.md's 64 KiB (an addition to it).
MAX_BATCH_BODY = 2 * 1024 * 1024
REQUEST_ID = "shardpay.request_id"
MERCHANT = "shardpay.merchant"
ROUTE = "shardpay.route"


def too_large(limit: int = MAX_BODY) -> ApiError:
    return ApiError(413, "invalid_request_error", "body_too_large", f"Request bodies are limited to {limit} bytes.")


def invalid_json(message: str) -> ApiError:
    return ApiError.invalid(None, message, code="invalid_json")


def request_id(request: Request) -> str:
    rid: str = request.scope.get(REQUEST_ID, "")
    return rid


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` lowercase, as ASGI servers give names), or None."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """A JSON response straight to the ASGI ``send``, with the headers Starlette's Response would give it."""
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    if headers:
        raw.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _error(error: ApiError, rid: str, headers: dict[str, str] | None) -> tuple[int, bytes, dict[str, str]]:
    """An error's status, JSON body and headers (the caller's, then the error's own, which win)."""
    return error.status, orjson.dumps(error.body(rid)), {**(headers or {}), **error.headers}


async def send_error(send: Send, error: ApiError, rid: str, headers: dict[str, str] | None = None) -> None:
    await send_json(send, *_error(error, rid, headers))


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError, rid: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(*_error(error, rid, headers))
