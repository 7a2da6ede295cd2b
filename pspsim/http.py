"""JSON in and out, and the simulator's error shape: ``{"error": {type, code, message, param}}``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

MAX_BODY = 64 * 1024
REQUEST_ID = "pspsim.request_id"


@dataclass
class SimError(Exception):
    """An answer other than success, rendered by the call layer as the JSON error."""

    status: int
    type: str
    code: str
    message: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, request_id: str) -> Response:
        error = {"type": self.type, "code": self.code, "message": self.message, "param": self.param}
        body = {"error": {**error, "request_id": request_id}}
        return Response(orjson.dumps(body), self.status, self.headers, media_type="application/json")


def invalid(param: str | None, message: str, code: str = "parameter_invalid") -> SimError:
    return SimError(400, "invalid_request_error", code, message, param)


def missing(param: str) -> SimError:
    return SimError(400, "invalid_request_error", "parameter_missing", f"Missing required parameter '{param}'.", param)


def not_found(what: str) -> SimError:
    return SimError(404, "invalid_request_error", "resource_missing", f"No such {what}.", None)


def unavailable(code: str, message: str) -> SimError:
    return SimError(503, "api_error", code, message, None, {"Retry-After": "1"})


def json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refusing more than ``limit`` bytes whatever Content-Length says."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise SimError(413, "invalid_request_error", "body_too_large", f"Bodies are limited to {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        params = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(None, f"The request body is not valid JSON: {exc}.", "invalid_json") from None
    if not isinstance(params, dict):
        raise invalid(None, "The request body must be a JSON object.", "invalid_json")
    return params


def request_id(request: Request) -> str:
    rid: str = request.scope.get(REQUEST_ID, "")
    return rid
