"""API key -> key and merchant, from an in-process cache, so that a request costs no database round trip for auth.

- A known key is answered from the cache. Past ``ttl`` it is still answered while one background lookup
  refreshes it (stale-while-revalidate): no request waits on the control database for a key it knows.
- Revocation reaches every gateway process within a second: each polls the control database's revocations
  every ``poll`` seconds and drops what it finds (``shards.keys.revoked_since``).
- An unknown key costs little and cannot push a known one out: a key of the wrong shape is refused unread;
  concurrent requests with the same key share one lookup; lookups of keys the cache does not know are rate
  limited per process (a token bucket: past it, 503 and retry) and bounded by the request's deadline; their
  answers live in a cache of their own, so a flood of bad keys evicts only other bad keys. Both caches drop
  their least recently used entry when full.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import OrderedDict
from typing import Generic, TypeVar

import asyncpg

from shardpay.domain.errors import ApiError
from shards import keys
from shards.errors import TRANSIENT
from shards.keys import ApiKey

_INVALID = ApiError(401, "authentication_error", "api_key_invalid", "Invalid API key provided.", None)
# Revocations committed this long after their revoked_at timestamp are still seen by the next poll.
_OVERLAP = dt.timedelta(seconds=5)
V = TypeVar("V")
# The control database could not answer: it is down, slow past the deadline, or in trouble.
_UNANSWERED: tuple[type[BaseException], ...] = (TimeoutError, *TRANSIENT, asyncpg.PostgresError)


def _unavailable() -> ApiError:
    return ApiError.unavailable("dependency_unavailable", "Authentication is unavailable; retry.")


class Lru(Generic[V]):
    """Entries with an expiry, the least recently used dropped first when full."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()

    def get(self, key: bytes) -> tuple[float, V] | None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: bytes, expires: float, value: V) -> None:
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._at = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class KeyCache:
    def __init__(
        self, pool: asyncpg.Pool, *, ttl: float = 60.0, negative_ttl: float = 30.0, size: int = 100_000,
        negative_size: int = 20_000, misses_per_s: float = 100.0, miss_burst: float = 200.0, poll: float = 0.5,
        lookup_timeout: float = 5.0,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._lookup_timeout = lookup_timeout
        self._ttl, self._negative_ttl, self._poll = ttl, negative_ttl, poll
        self._known: Lru[ApiKey] = Lru(size)
        self._unknown: Lru[None] = Lru(negative_size)
        self._misses = Bucket(misses_per_s, miss_burst)
        self._inflight: dict[bytes, asyncio.Future[ApiKey | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow revocations (every ``poll`` seconds) until ``close``."""
        self._poller = asyncio.create_task(self._follow_revocations())

    async def close(self) -> None:
        for task in [*self._background, *([self._poller] if self._poller else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def authenticate(self, authorization: str | None, deadline: float) -> ApiKey:
        """The key and merchant for an ``Authorization: Bearer`` header, or 401; 503 if the control database
        cannot say before ``deadline`` (a loop time)."""
        scheme, _, api_key = (authorization or "").partition(" ")
        api_key = api_key.strip()
        if scheme.lower() != "bearer" or not keys.well_formed(api_key):
            raise _INVALID
        found = await self._find(keys.digest(api_key), deadline)
        if found is None:
            raise _INVALID
        return found

    async def _find(self, digest: bytes, deadline: float) -> ApiKey | None:
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None:
            if known[0] <= now:
                self._refresh(digest)
            return known[1]
        unknown = self._unknown.get(digest)
        if unknown is not None and unknown[0] > now:
            return None
        return await self._shared_lookup(digest, deadline)

    async def _shared_lookup(self, digest: bytes, deadline: float) -> ApiKey | None:
        pending = self._inflight.get(digest)
        if pending is None:
            if not self._misses.take():
                raise _unavailable()
            pending = self._start_lookup(digest)
        try:
            async with asyncio.timeout_at(deadline):
                # Shielded: one caller's deadline must not cancel the lookup the others wait for.
                return await asyncio.shield(pending)
        except _UNANSWERED:
            raise _unavailable() from None

    def _start_lookup(self, digest: bytes) -> asyncio.Future[ApiKey | None]:
        """One lookup of ``digest`` that every concurrent caller shares."""
        future = asyncio.ensure_future(self._lookup(digest))
        self._inflight[digest] = future

        def done(_: asyncio.Future[ApiKey | None]) -> None:
            self._inflight.pop(digest, None)
            if not future.cancelled():
                future.exception()  # retrieved here, so that a lookup whose callers all gave up logs nothing

        future.add_done_callback(done)
        return future

    async def _lookup(self, digest: bytes) -> ApiKey | None:
        # Bounded by itself too: callers stop waiting at their deadlines, a background refresh at nobody's.
        async with asyncio.timeout(self._lookup_timeout):
            found = await keys.lookup(self._pool, digest)
        if found is None:
            self._unknown.put(digest, time.monotonic() + self._negative_ttl, None)
        else:
            self._known.put(digest, time.monotonic() + self._ttl, found)
        return found

    def _refresh(self, digest: bytes) -> None:
        if digest in self._inflight:
            return
        refresh = asyncio.create_task(self._settle_refresh(digest, self._start_lookup(digest)))
        self._background.add(refresh)
        refresh.add_done_callback(self._background.discard)

    async def _settle_refresh(self, digest: bytes, task: asyncio.Future[ApiKey | None]) -> None:
        try:
            if await task is None:
                self._known.drop(digest)  # revoked or gone: the poller may not have said so yet
        except _UNANSWERED:
            pass  # the entry stays as it was, and is tried again on its next use

    async def _follow_revocations(self) -> None:
        since: dt.datetime | None = None
        while True:
            try:
                async with asyncio.timeout(max(self._poll, 1.0)):
                    now, revoked = await keys.revoked_since(self._pool, since)
            except _UNANSWERED:
                pass  # keep the last watermark: what was revoked meanwhile is found once the database answers
            else:
                for digest in revoked:
                    self._known.drop(digest)
                since = now - _OVERLAP
            await asyncio.sleep(self._poll)
