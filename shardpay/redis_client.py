"""The one place a process gets its Redis client (the gateway's edge and probes, the executors' breakers).

With ``SHARDPAY_REDIS_SENTINELS`` set, the client follows Sentinel: every new connection asks a sentinel where
``SHARDPAY_REDIS_MASTER`` is now, and a connection that meets a demoted primary (READONLY) is dropped, so after a
failover the next calls reach the new primary without anyone's help. The database number, user and password
still come from ``SHARDPAY_REDIS_URL``; its host and port are then Sentinel's business. Without sentinels, the
URL is used as it is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from shardpay.config import Settings


def _url_parts(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    found: dict[str, Any] = {"db": int(parts.path.strip("/") or 0)}
    if parts.username:
        found["username"] = unquote(parts.username)
    if parts.password:
        found["password"] = unquote(parts.password)
    return found


def connect(settings: Settings, max_connections: int | None = None) -> aioredis.Redis:
    """A client bounded by ``SHARDPAY_REDIS_TIMEOUT`` for every connect and reply, direct or through Sentinel."""
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout, "socket_connect_timeout": settings.redis_timeout,
    }  # fmt: skip
    pool: dict[str, Any] = {} if max_connections is None else {"max_connections": max_connections}
    if not settings.redis_sentinels:
        return aioredis.Redis.from_url(settings.redis_url, **timeouts, **pool)
    sentinel = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=dict(timeouts))  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(
        settings.redis_master, **timeouts, **pool, **_url_parts(settings.redis_url)
    )
    return client
