"""Per-API-key rate limiting: GCRA in one Lua function, evaluated in Redis in the request's one round trip."""

from __future__ import annotations

import importlib.resources
import math
from dataclasses import dataclass
from typing import Any

LUA = (importlib.resources.files("ratelimit") / "gcra.lua").read_text()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    reset_ms: int

    @classmethod
    def from_reply(cls, reply: list[Any], burst: int) -> Decision:
        allowed, remaining, retry_after_ms, reset_ms = (int(x) for x in reply)
        return cls(bool(allowed), burst, max(0, remaining), retry_after_ms, reset_ms)

    @classmethod
    def unlimited(cls, burst: int) -> Decision:
        """What a fail-open gateway answers while Redis is unreachable."""
        return cls(True, burst, burst, 0, 0)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_ms / 1000)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_ms / 1000)))
        return headers


def bucket_key(merchant_id: str) -> str:
    return f"rl:{merchant_id}"
