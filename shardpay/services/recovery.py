"""Saga recovery: finish cross-shard transfers that the gateway left half done (a crash, a slow or down shard).

A transfer still 'debited' after ``saga_recovery_after`` seconds gets legs 2 and 3 again; past
``saga_abort_after`` it is fenced off on the destination shard and the source is refunded (unless leg 2 got
there first, in which case it settles). Every leg is idempotent in SQL, so any number of workers, and the
gateway's own inline completion, may race on the same transfer: each leg still applies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sys
import time
import traceback
from collections import Counter

import asyncpg
import orjson

from shardpay import ids, tracing
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.runtime import settle_gc
from shardpay.services import saga
from shards.errors import TRANSIENT, on_shard
from shards.pools import Shards, open_shards
from shards.retention import prune_idempotency

BATCH = 32  # transfers settled concurrently: each holds a connection on two shards for a moment
PAUSE = 1.0  # seconds between passes
PRUNE_EVERY = 300.0  # seconds between sweeps of expired idempotency records

# Keyset-paged over the partial index transfers_saga_open, oldest first.
_STUCK = (
    "SELECT *, created_at < now() - make_interval(secs => $2) AS expired FROM transfers "
    "WHERE saga_state = 'debited' AND created_at < now() - make_interval(secs => $1) "
    "AND (created_at, id) > ($3, $4) ORDER BY created_at, id LIMIT $5"
)
_BEGINNING: tuple[dt.datetime, str] = (dt.datetime.min.replace(tzinfo=dt.UTC), "")
# A deadlock or serialization failure rolled the leg back: the next pass runs it again.
_RETRY_LATER = (asyncpg.TransactionRollbackError,)


async def recover_once(shards: Shards, settings: Settings) -> dict[str, int]:
    """One pass over every shard; a shard that is down, or whose pass fails, is counted and the others carry on."""
    passes = await asyncio.gather(*(_isolated_pass(shards, settings, i) for i in range(len(shards.pools))))
    return dict(sum(passes, Counter[str]()))


async def _isolated_pass(
    shards: Shards, settings: Settings, shard: int, stop: asyncio.Event | None = None
) -> Counter[str]:
    """``recover_shard``, with an unexpected error (a bug, a malformed row) logged and counted, not raised: it
    must not end recovery on the other shards, nor this shard's next pass. Cancellation still goes through."""
    try:
        return await recover_shard(shards, settings, shard, stop)
    except Exception as error:
        _log_error(error, shard)
        return Counter(error=1)


async def recover_shard(
    shards: Shards, settings: Settings, shard: int, stop: asyncio.Event | None = None
) -> Counter[str]:
    """Every transfer sourced on ``shard`` that is stuck now, in batches of BATCH (until ``stop`` is set)."""
    counts: Counter[str] = Counter()
    after = _BEGINNING
    down: set[int] = set()
    while stop is None or not stop.is_set():
        try:
            batch = await on_shard(shard, _stuck(shards.pool(shard), settings, after))
        except ApiError:
            counts["shard_unavailable"] += 1
            return counts
        counts["found"] += len(batch)
        counts.update(await asyncio.gather(*(_recover_isolated(shards, shard, row, down) for row in batch)))
        if len(batch) < BATCH:
            return counts
        after = (batch[-1]["created_at"], batch[-1]["id"])
    return counts


async def _stuck(pool: asyncpg.Pool, settings: Settings, after: tuple[dt.datetime, str]) -> list[asyncpg.Record]:
    return await pool.fetch(_STUCK, settings.saga_recovery_after, settings.saga_abort_after, after[0], after[1], BATCH)


async def _recover_isolated(shards: Shards, shard: int, transfer: asyncpg.Record, down: set[int]) -> str:
    """``_recover``, with an unexpected error logged and counted: the rest of the batch and of the pass go on."""
    try:
        return await _recover(shards, transfer, down)
    except Exception as error:
        _log_error(error, shard, transfer["id"])
        return "error"


async def _recover(shards: Shards, transfer: asyncpg.Record, down: set[int]) -> str:
    """Settle or abort one transfer; returns what became of it (a key of the pass's counts)."""
    slot = ids.parse(transfer["destination"], "wal")
    destination = shards.index_of(slot) if slot is not None else None
    if destination in down:
        return "skipped"  # its shard already failed this pass: do not wait on it once per transfer
    try:
        if transfer["expired"]:
            return await saga.abort(shards, transfer)
        return await saga.settle(shards, transfer)
    except ApiError as error:
        if error.status != 503:
            raise
        if destination is not None:
            down.add(destination)
        return "unavailable"
    except _RETRY_LATER:
        return "retry"


async def run_forever(settings: Settings) -> None:
    """``shardpay recover``: a pass per source shard every PAUSE seconds until SIGTERM or SIGINT."""
    tracing.configure(settings.otlp_endpoint, "shardpay-recovery")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_shards(settings, pool_max=BATCH) as shards:
            settle_gc()
            # One loop per source shard, so a slow or down shard never delays the others.
            await asyncio.gather(*(_keep_recovering(shards, settings, i, stop) for i in range(len(shards.pools))))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _keep_recovering(shards: Shards, settings: Settings, shard: int, stop: asyncio.Event) -> None:
    next_prune = 0.0
    while not stop.is_set():
        counts = await _isolated_pass(shards, settings, shard, stop)
        if time.monotonic() >= next_prune:
            # The same housekeeping loop keeps idempotency records for their 24 hours, and no longer.
            counts["idempotency_pruned"] = await _prune(shards, shard)
            next_prune = time.monotonic() + PRUNE_EVERY
        if any(counts.values()):
            _log(shard, counts)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PAUSE)


async def _prune(shards: Shards, shard: int) -> int:
    try:
        return await prune_idempotency(shards.pool(shard))
    except TRANSIENT:
        return 0
    except Exception as error:  # as for a pass: logged, and the loop goes on
        _log_error(error, shard)
        return 0


def _log(shard: int, counts: Counter[str]) -> None:
    _write({"ts": round(time.time(), 3), "event": "saga_recovery", "shard": shard, **counts})


def _log_error(error: Exception, shard: int, transfer_id: str | None = None) -> None:
    """One JSON line: where (the source shard, the transfer if one), the error's class and its traceback. Rows
    and arguments are not logged: a traceback holds code and the error's message, never frame locals."""
    line = {
        "ts": round(time.time(), 3), "event": "saga_recovery.error", "shard": shard, "transfer": transfer_id,
        "error": type(error).__name__, "traceback": "".join(traceback.format_exception(error)),
    }  # fmt: skip
    _write(line)


def _write(line: dict[str, object]) -> None:
    sys.stderr.write(orjson.dumps(line).decode() + "\n")
    sys.stderr.flush()
