"""The request's one Redis round trip: GCRA and the idempotency lock in one composed script.

Concurrent script calls share round trips: while one pipeline is in flight, the calls that arrive wait and go
together in the next (``shards.batcher.Batcher``, the same group commit as the shards'). A pipeline is packed
here, EVALSHA by EVALSHA, and goes out through one of redis-py's connections, whose hiredis parser reads the
replies: redis-py's own pipeline spent about 110 µs of the gateway's CPU per request (its two script calls)
in Python packing and line-by-line parsing, this about 50 (measured on the benchmark machine).

If Redis is unreachable the edge says so (``None``) quickly instead of waiting on every request: after a failure
it skips Redis for ``cooldown`` seconds. Idempotency then rests on PostgreSQL alone; rate limiting follows
``SHARDPAY_RATELIMIT_FAIL_OPEN``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

import idempotency
import ratelimit
from idempotency import Begin, Stored
from shards.batcher import Batcher

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
    """A Lua script, sent by its SHA1 (EVALSHA) and whole (EVAL) when the server has lost its script cache."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.evalsha = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + b"\r\n"


Call = tuple[Script, list[str], list[Any]]


def _bulk(value: str | int | bytes) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(calls: Sequence[Call]) -> bytes:
    """The RESP bytes of one EVALSHA per call."""
    out: list[bytes] = []
    for script, keys, args in calls:
        out.append(b"*%d\r\n" % (3 + len(keys) + len(args)))
        out.append(script.evalsha)
        out.append(_bulk(len(keys)))
        out.extend(map(_bulk, keys))
        out.extend(map(_bulk, args))
    return b"".join(out)


async def _roundtrip(client: aioredis.Redis, calls: Sequence[Call]) -> list[Any]:
    """Send every call, then read every reply; a reply that is an error (NOSCRIPT, say) is that call's alone."""
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(pack(calls), check_health=False)
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(await connection.read_response())
            except redis.exceptions.ResponseError as error:
                replies.append(error)
    except BaseException:
        # Half a pipeline may be unread on it: never hand this connection to anyone again.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
    return replies


async def pipelined(client: aioredis.Redis, calls: Sequence[Call]) -> list[Any]:
    """Run ``calls`` in one pipeline; each gets its reply or its own exception (never raises)."""
    try:
        replies = await _roundtrip(client, calls)
    except Exception as exc:  # the connection, for every call alike
        return [exc] * len(calls)
    out: list[Any] = []
    for (script, keys, args), reply in zip(calls, replies, strict=True):
        if isinstance(reply, redis.exceptions.NoScriptError):  # the server lost its scripts: send this one whole
            try:
                reply = await client.eval(script.source, len(keys), *keys, *args)
            except Exception as exc:
                reply = exc
        out.append(reply)
    return out


class Edge:
    def __init__(self, client: aioredis.Redis, lock_ms: int, cache_s: int, cooldown: float = 1.0) -> None:
        self._client = client
        self._lock_ms = lock_ms
        self._cache_s = cache_s
        self._cooldown = cooldown
        self._down_until = 0.0
        self._write, self._read, self._finish = Script(_WRITE), Script(_READ), Script(_FINISH)
        # No queue limit: every waiting call is a request the gateway already holds.
        self._calls: Batcher[Call, Any] = Batcher(self._many, self._one, None, max_batch=128, queue_limit=None)

    async def _many(self, calls: Sequence[Call]) -> list[Any]:
        return await pipelined(self._client, calls)

    async def _one(self, call: Call) -> Any:
        reply = (await pipelined(self._client, [call]))[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        if not self.available:
            return None
        try:
            return await self._calls.submit((script, keys, args))
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
