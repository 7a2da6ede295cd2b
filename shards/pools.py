"""One asyncpg pool per shard plus the control pool, created once at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from shardpay.config import Settings
from shards.errors import TRANSIENT
from shards.router import SlotMap
from shards.tick import ShardTick


@dataclass(frozen=True)
class Shards:
    control: asyncpg.Pool
    pools: tuple[asyncpg.Pool, ...]
    slots: SlotMap
    tick_linger: float = 0.0
    # Per shard, a pool on its read replicas (SHARDPAY_SHARD_REPLICA_DSNS) or None: only for reads that
    # tolerate lag (shardpay.services.reads says which).
    replicas: tuple[asyncpg.Pool | None, ...] = ()
    ticks: tuple[ShardTick, ...] = field(init=False)

    def __post_init__(self) -> None:
        ticks = tuple(ShardTick(i, pool, self.tick_linger) for i, pool in enumerate(self.pools))
        object.__setattr__(self, "ticks", ticks)

    def index_of(self, slot: int) -> int:
        return self.slots.shard_of(slot)

    def pool(self, shard: int) -> asyncpg.Pool:
        return self.pools[shard]

    def replica(self, shard: int) -> asyncpg.Pool | None:
        return self.replicas[shard] if shard < len(self.replicas) else None


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release without a reset query. asyncpg's default runs ``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` on every release: one more round trip and server work per query, measured as
    a large share of the gateway's time. Nothing here keeps session state (no LISTEN, no session-level
    advisory locks, no SET), and an open transaction is still rolled back by the pool itself."""


# Every statement planned for its own parameters and the table as it is now. asyncpg prepares each statement
# once per connection, and after five runs PostgreSQL may settle on a generic plan made while a table was new
# and empty: the notifier's "which of these events are final" became a scan of all of webhook_deliveries,
# 15 ms per call and the largest single cost in the database (pg_stat_statements, make bench), until autovacuum
# analysed the table a minute later. Planning these statements costs tens of µs; the sp_* functions pick
# their own plan mode.
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(dsn: str, settings: Settings, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=settings.db_timeout,
        timeout=settings.db_timeout,
        reset=_keep_session,
        server_settings=SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


async def _warm(index: int, pool: asyncpg.Pool, count: int) -> None:
    """Open ``count`` connections now so the first requests don't pay for them; a shard that is down is
    reported and left to connect on demand (its requests answer 503 meanwhile)."""
    held: list[asyncpg.pool.PoolConnectionProxy] = []
    try:
        for _ in range(count):
            held.append(await pool.acquire())
    except TRANSIENT as exc:
        sys.stderr.write(f'{{"event": "shard.unreachable", "shard": {index}, "error": "{type(exc).__name__}"}}\n')
    finally:
        # Every connection taken goes back, even when a later one failed: a lost one would shrink the pool for good.
        for connection in held:
            await pool.release(connection)


@contextlib.asynccontextmanager
async def open_shards(settings: Settings, pool_max: int | None = None) -> AsyncIterator[Shards]:
    """Connect to the control database (fail fast: without the slot map nothing routes) and to every shard
    (lazily: one shard being down must not keep the others from serving)."""
    size = pool_max or settings.pool_max
    opened: list[asyncpg.Pool] = []
    try:
        control = await create_pool(settings.control_dsn, settings, 1, max(2, size // 4))
        opened.append(control)
        slots = await SlotMap.load(control)
        if slots.shard_count > settings.shard_count:
            raise RuntimeError(
                f"slot_map names {slots.shard_count} shards but SHARDPAY_SHARD_DSNS lists {settings.shard_count}"
            )
        for dsn in settings.shard_dsns:
            opened.append(await create_pool(dsn, settings, 0, size))
        pools = tuple(opened[1:])
        replicas: list[asyncpg.Pool | None] = []
        for replica_dsn in settings.shard_replica_dsns:
            replica = await create_pool(replica_dsn, settings, 0, size) if replica_dsn else None
            if replica is not None:
                opened.append(replica)
            replicas.append(replica)
        await asyncio.gather(*(_warm(i, pool, min(settings.pool_min, size)) for i, pool in enumerate(pools)))
        yield Shards(
            control=control, pools=pools, slots=slots, tick_linger=settings.tick_linger, replicas=tuple(replicas)
        )
    finally:
        for pool in opened:
            await pool.close()
