"""API key -> merchant, cached in-process so a request costs no database round trip for auth."""

from __future__ import annotations

import time

import asyncpg

from shardpay.domain.errors import ApiError
from shards import control
from shards.control import Merchant
from shards.errors import TRANSIENT

_INVALID = ApiError(401, "authentication_error", "api_key_invalid", "Invalid API key provided.", None)


class MerchantCache:
    """Positive answers live ``ttl`` seconds (so a revoked key stops working within it), negative ones less."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = 30.0, negative_ttl: float = 2.0, size: int = 100_000) -> None:
        self._pool = pool
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._size = size
        self._entries: dict[bytes, tuple[float, Merchant | None]] = {}

    async def authenticate(self, authorization: str | None) -> Merchant:
        scheme, _, api_key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not api_key.strip():
            raise _INVALID
        merchant = await self._lookup(api_key.strip())
        if merchant is None:
            raise _INVALID
        return merchant

    async def _lookup(self, api_key: str) -> Merchant | None:
        digest = control.hash_key(api_key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            merchant = await control.merchant_for_key(self._pool, api_key)
        except TRANSIENT:
            raise ApiError.unavailable("dependency_unavailable", "Authentication is unavailable; retry.") from None
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[digest] = (now + (self._ttl if merchant else self._negative_ttl), merchant)
        return merchant
