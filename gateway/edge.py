"""The request's one Redis round trip: GCRA and the idempotency lock in one composed script.

If Redis is unreachable the edge says so (``None``) quickly instead of waiting on every request: after a failure
it skips Redis for ``cooldown`` seconds. Idempotency then rests on PostgreSQL alone; rate limiting follows
``SHARDPAY_RATELIMIT_FAIL_OPEN``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

import idempotency
import ratelimit
from idempotency import Begin, Stored

REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    OSError,
    TimeoutError,
)

_WRITE = (
    ratelimit.LUA
    + idempotency.LUA
    + """
local rl = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if rl[1] == 0 then return {rl} end
return {rl, idem_begin(KEYS[2], ARGV[3], tonumber(ARGV[4]))}
"""
)
_READ = ratelimit.LUA + "\nreturn gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"
_FINISH = idempotency.LUA + "\nreturn idem_finish(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))\n"


class Script:
    """EVALSHA with a fallback to EVAL when the server has lost its script cache (a restart, a failover)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: aioredis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


class Edge:
    def __init__(self, client: aioredis.Redis, lock_ms: int, cache_s: int, cooldown: float = 1.0) -> None:
        self._client = client
        self._lock_ms = lock_ms
        self._cache_s = cache_s
        self._cooldown = cooldown
        self._down_until = 0.0
        self._write, self._read, self._finish = Script(_WRITE), Script(_READ), Script(_FINISH)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        if not self.available:
            return None
        try:
            return await script(self._client, keys, args)
        except REDIS_TRANSIENT:
            self._down_until = time.monotonic() + self._cooldown
            return None

    async def write(self, merchant_id: str, rate: int, burst: int, key: str) -> tuple[Any, Begin | None]:
        """(GCRA reply or None, lock state or None) for a POST; None means Redis is unreachable."""
        token = idempotency.new_token()
        keys = [ratelimit.bucket_key(merchant_id), idempotency.redis_key(merchant_id, key)]
        reply = await self._run(self._write, keys, [rate, burst, token, self._lock_ms])
        if reply is None:
            return None, None
        begin = Begin.from_reply(reply[1], token) if len(reply) > 1 else None
        return reply[0], begin

    async def read(self, merchant_id: str, rate: int, burst: int) -> Any:
        return await self._run(self._read, [ratelimit.bucket_key(merchant_id)], [rate, burst])

    async def finish(self, merchant_id: str, key: str, token: str, stored: Stored | None) -> None:
        """Cache the final response (or just release the lock when there is nothing to cache)."""
        value = stored.encode() if stored is not None else b""
        await self._run(self._finish, [idempotency.redis_key(merchant_id, key)], [token, value, self._cache_s])

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except REDIS_TRANSIENT:
            return False
