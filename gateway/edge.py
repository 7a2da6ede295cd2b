"""The request's one Redis round trip: GCRA and the idempotency lock in one composed script.

Concurrent script calls share round trips: while one pipeline is in flight, the calls that arrive wait and go
together in the next (``shards.batcher.Batcher``, the same group commit as the shards'). A pipeline is packed
here, EVALSHA by EVALSHA, and goes out through one of redis-py's connections, whose hiredis parser reads the
replies: redis-py's own pipeline spent about 110 µs of the gateway's CPU per request (its two script calls)
in Python packing and line-by-line parsing, this about 50 (measured on the benchmark machine).

If Redis is unreachable or answers an error the edge says so (``None``) quickly instead of waiting on every
request: after a failure it skips Redis for ``cooldown`` seconds. Idempotency then rests on PostgreSQL alone;
rate limiting follows ``SHARDPAY_RATELIMIT_FAIL_OPEN``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from opentelemetry.trace import SpanKind

import idempotency
import ratelimit
from idempotency import Begin, State, Stored
from shardpay import tracing
from shards.batcher import Batcher

# Everything that means "Redis cannot do this now": a lost connection or a timeout, and also any error reply
# (OOM under maxmemory, MISCONF, READONLY after a failover, NOPERM, a script that failed). All take the same
# path as an outage: fail open or 503 as configured, idempotency resting on PostgreSQL, never a 500.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)
# A reply of the wrong shape (a script answering what it should not) is treated the same way.
_UNREADABLE: tuple[type[BaseException], ...] = (*REDIS_ERRORS, ValueError, TypeError, IndexError, KeyError)

_WRITE = (
    ratelimit.LUA
    + idempotency.LUA
    + """
local rl = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if rl[1] == 0 then return {rl} end
return {rl, idem_begin(KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[4]))}
"""
)
_READ = ratelimit.LUA + "\nreturn gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"
_FINISH = idempotency.LUA + "\nreturn idem_finish(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))\n"
_RELEASE = idempotency.LUA + "\nreturn idem_release(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))\n"


class Script:
    """A Lua script, sent by its SHA1 (EVALSHA) and whole (EVAL) when the server has lost its script cache."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.evalsha = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + b"\r\n"


Call = tuple[Script, list[str], list[Any]]
MAX_RELEASES = 512  # locks given back per pipeline


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
        self._release = Script(_RELEASE)
        # No queue limit: every waiting call is a request the gateway already holds.
        self._calls: Batcher[Call, Any] = Batcher(self._many, self._one, None, max_batch=128, queue_limit=None)
        # Retried more often than the cooldown lasts, so a lock is back before requests use Redis again.
        self._releases = Releases(self._release_many, lock_ms / 1000, pause=min(0.25, cooldown / 4))

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

    def _went_down(self) -> None:
        self._down_until = time.monotonic() + self._cooldown

    async def write(self, bucket: str, rate: int, burst: int, merchant_id: str, key: str) -> tuple[Any, Begin | None]:
        """(GCRA reply, lock state) for a POST rate-limited in ``bucket``. (None, None): Redis was skipped (it is
        cooling down after a failure) and holds nothing of this request's. (None, UNKNOWN): the call failed, and
        it may have taken the lock: ``finish`` gives it back once Redis answers."""
        token = idempotency.new_token()
        if not self.available:
            return None, None
        keys = [ratelimit.bucket_key(bucket), idempotency.redis_key(merchant_id, key), idempotency.tombstone(token)]
        try:
            with tracing.span("redis rate limit + lock", kind=SpanKind.CLIENT):
                reply = await self._calls.submit((self._write, keys, [rate, burst, token, self._lock_ms]))
            begin = Begin.from_reply(reply[1], token) if len(reply) > 1 else None
            return reply[0], begin
        except _UNREADABLE:
            self._went_down()
            return None, Begin(State.UNKNOWN, token)

    async def read(self, bucket: str, rate: int, burst: int) -> Any:
        """The GCRA reply for a request rate-limited in ``bucket``, or None if Redis cannot say."""
        if not self.available:
            return None
        try:
            with tracing.span("redis rate limit", kind=SpanKind.CLIENT):
                return await self._calls.submit((self._read, [ratelimit.bucket_key(bucket)], [rate, burst]))
        except REDIS_ERRORS:
            self._went_down()
            return None

    async def finish(self, merchant_id: str, key: str, begin: Begin, stored: Stored | None) -> None:
        """After a POST: cache its final response, or give its lock back. Never raises, never waits on a Redis
        that is down: a lock that cannot be given back now (or whose state is unknown) is given back in the
        background as soon as Redis answers, so a retry of this request is not refused with 409 meanwhile."""
        redis_key = idempotency.redis_key(merchant_id, key)
        if begin.state is State.UNKNOWN or not self.available:
            self._releases.add(redis_key, begin.token)
            return
        assert begin.state is State.ACQUIRED, begin
        value = stored.encode() if stored is not None else b""
        try:
            with tracing.span("redis finish", kind=SpanKind.CLIENT):
                await self._calls.submit((self._finish, [redis_key], [begin.token, value, self._cache_s]))
        except REDIS_ERRORS:
            self._went_down()
            self._releases.add(redis_key, begin.token)

    async def _release_many(self, locks: Sequence[tuple[str, str]]) -> list[bool]:
        calls = [
            (self._release, [redis_key, idempotency.tombstone(token)], [token, self._lock_ms])
            for redis_key, token in locks
        ]
        return [not isinstance(reply, BaseException) for reply in await pipelined(self._client, calls)]

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except REDIS_ERRORS:
            return False

    async def close(self) -> None:
        await self._releases.close()


class Releases:
    """Locks to give back once Redis answers: tried at once, then every ``pause`` seconds, each until its lock
    would have expired by itself (``lifetime``). A compare-and-delete, so a lock that is no longer this
    request's (expired, taken by a later request) is left alone; and where the lock is not there, a tombstone for
    the request's token, so that its own call, should Redis run it late, takes no lock (``idem_release``)."""

    def __init__(
        self, release: Callable[[Sequence[tuple[str, str]]], Awaitable[list[bool]]], lifetime: float, pause: float
    ) -> None:
        self._release = release
        self._lifetime = lifetime
        self._pause = pause
        self._pending: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, redis_key: str, token: str) -> None:
        self._pending[(redis_key, token)] = time.monotonic() + self._lifetime
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            now = time.monotonic()
            for lock in [lock for lock, until in self._pending.items() if until <= now]:
                del self._pending[lock]
            batch = list(self._pending)[:MAX_RELEASES]
            if batch:
                done = await self._release(batch)
                for lock, released in zip(batch, done, strict=True):
                    if released:
                        self._pending.pop(lock, None)
            if self._pending:
                await asyncio.sleep(self._pause)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
