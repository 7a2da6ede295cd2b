"""Where the PSP's circuit breakers can be seen: each executor publishes its breakers' states to Redis every
second, and the gateway reads them for ``/readyz`` (degraded, not down) and ``/metrics``.

A breaker lives in the process that calls the PSP (every executor has its own, as Hystrix's do), so what is
published is per process, with the time it was written; the reader keeps the fresh entries and reports, per
operation, the worst state any executor is in.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from shardpay.resilience import Breaker

KEY = "shardpay:psp:breakers"
FRESH = 5.0  # seconds an entry counts after it was written
_ORDER = {"closed": 0, "half_open": 1, "open": 2}
_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)


def _who() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def publish(client: aioredis.Redis, breakers: Iterable[Breaker]) -> None:
    """Write this process's breakers (a lost write is harmless: the next one comes a second later)."""
    now = time.time()
    fields = {f"{_who()}:{b.name}": orjson.dumps({"op": b.name, "state": b.state.value, "at": now}) for b in breakers}
    try:
        await client.hset(KEY, mapping=fields)  # type: ignore[arg-type]  # redis-py's Mapping is invariant
        await client.expire(KEY, int(FRESH * 4))
    except _ERRORS:
        pass


async def read(client: aioredis.Redis) -> dict[str, str] | None:
    """The worst fresh state per PSP operation across executors; None if Redis cannot say."""
    try:
        entries = await client.hgetall(KEY)
    except _ERRORS:
        return None
    now = time.time()
    worst: dict[str, str] = {}
    for raw in entries.values():
        entry = orjson.loads(raw)
        if now - entry["at"] > FRESH:
            continue
        if _ORDER[entry["state"]] >= _ORDER.get(worst.get(entry["op"], "closed"), 0):
            worst[entry["op"]] = entry["state"]
    return worst
