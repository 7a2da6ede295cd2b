"""JSON in and out: reading a capped body, rendering responses and errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from shardpay.domain.errors import ApiError

MAX_BODY = 64 * 1024
REQUEST_ID = "shardpay.request_id"
MERCHANT = "shardpay.merchant"
ROUTE = "shardpay.route"


def too_large() -> ApiError:
    return ApiError(413, "invalid_request_error", "body_too_large", f"Request bodies are limited to {MAX_BODY} bytes.")


def invalid_json(message: str) -> ApiError:
    return ApiError.invalid(None, message, code="invalid_json")


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``. Reads at most ``MAX_BODY`` bytes, whatever is declared."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large()
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        params = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(params, dict):
        raise invalid_json("The request body must be a JSON object.")
    return params


def request_id(request: Request) -> str:
    rid: str = request.scope.get(REQUEST_ID, "")
    return rid


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError, rid: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(error.status, orjson.dumps(error.body(rid)), {**(headers or {}), **error.headers})
