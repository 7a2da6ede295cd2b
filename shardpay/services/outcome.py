"""What a handler hands back to the edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from shardpay.domain.errors import ApiError

if TYPE_CHECKING:
    from shards.ledger import Applied


@dataclass(frozen=True)
class Caller:
    """Who asks, and under which idempotency key (None for reads)."""

    merchant_id: str
    request_id: str
    idempotency_key: str | None = None
    fingerprint: str | None = None

    @property
    def key(self) -> str:
        assert self.idempotency_key is not None, "a write needs an idempotency key"
        return self.idempotency_key

    @property
    def print(self) -> str:
        assert self.fingerprint is not None, "a write needs a fingerprint"
        return self.fingerprint


@dataclass(frozen=True)
class Outcome:
    status: int
    body: bytes
    # The shard's durable idempotency record holds this response: the edge may cache it in Redis.
    stored: bool = False
    # False while the object may still change (a cross-shard transfer in flight): do not cache it.
    final: bool = True
    replayed: bool = False

    @classmethod
    def of(cls, status: int, obj: object) -> Outcome:
        return cls(status, orjson.dumps(obj))

    @classmethod
    def from_store(cls, status: int, body: str, replayed: bool, final: bool = True) -> Outcome:
        return cls(status, body.encode(), stored=True, final=final and not replayed, replayed=replayed)


def stored_answer(applied: Applied) -> Outcome:
    """A write's stored answer as the edge sends it (a replay marked so); 422 when the key is another request's,
    by its record or by its claim on the key's home shard."""
    if applied.outcome in ("key_reused", "claimed"):
        raise key_reused()
    assert applied.status is not None and applied.body is not None, applied
    return Outcome.from_store(applied.status, applied.body, replayed=applied.outcome == "replay")


def key_reused() -> ApiError:
    return ApiError(
        422, "idempotency_error", "idempotency_key_reused",
        "This Idempotency-Key was used with different parameters.", None,
    )  # fmt: skip


def key_in_use() -> ApiError:
    return ApiError(
        409, "idempotency_error", "idempotency_key_in_use",
        "A request with this Idempotency-Key is still running; retry later.", None, {"Retry-After": "1"},
    )  # fmt: skip
