"""The API's error vocabulary. Handlers raise these; the gateway renders them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiError(Exception):
    status: int
    type: str
    code: str
    message: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "request_id": request_id,
            }
        }

    @classmethod
    def invalid(cls, param: str | None, message: str, code: str = "parameter_invalid") -> ApiError:
        return cls(400, "invalid_request_error", code, message, param)

    @classmethod
    def missing(cls, param: str) -> ApiError:
        return cls(400, "invalid_request_error", "parameter_missing", f"Missing required parameter '{param}'.", param)

    @classmethod
    def not_found(cls, param: str | None, object_id: str) -> ApiError:
        return cls(404, "invalid_request_error", "resource_missing", f"No such object: '{object_id}'.", param)

    @classmethod
    def unavailable(cls, code: str, message: str, retry_after: int = 1) -> ApiError:
        return cls(503, "api_error", code, message, None, {"Retry-After": str(retry_after)})

    @classmethod
    def insufficient_funds(cls) -> ApiError:
        return cls(
            402, "payment_error", "insufficient_funds", "The source wallet's available balance is too low.", "amount"
        )

    @classmethod
    def currency_mismatch(cls, message: str) -> ApiError:
        return cls.invalid("currency", message, code="currency_mismatch")
