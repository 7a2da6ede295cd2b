"""What the executors sweep up, so that nothing waits forever silently: payments whose orders a gateway did not
place (it stopped, or a shard was down), and final orders whose outcome has not reached their payment's home
shard (whoever finished the order stopped before reporting it). Every step is idempotent, so any number of
executors may sweep at once. (Work stuck at the PSP needs no sweep of its own: its lease or its 'pending' recheck
makes it due again, and its next step asks the PSP.)"""

from __future__ import annotations

import asyncio
import contextlib
import traceback

import orjson

from events.logs import emit
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.services import payments as payment_service
from shardpay.services.psp_work import report
from shards import payments
from shards.errors import TRANSIENT
from shards.pools import Shards

_UNAVAILABLE: tuple[type[BaseException], ...] = (*TRANSIENT, ApiError)
BATCH = 100
PAUSE = 1.0  # seconds between sweeps


async def run(shards: Shards, settings: Settings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for shard in range(len(shards.pools)):
            try:
                swept = await sweep(shards, settings, shard)
            except _UNAVAILABLE as exc:
                emit("sweeper.shard_unavailable", shard=shard, error=type(exc).__name__)
                continue
            except Exception as exc:  # a bug: logged, and the other shards are swept all the same
                emit("sweeper.error", shard=shard, error=type(exc).__name__, traceback=traceback.format_exc())
                continue
            if any(swept.values()):
                emit("sweeper.swept", shard=shard, **swept)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PAUSE)


async def sweep(shards: Shards, settings: Settings, shard: int) -> dict[str, int]:
    """One sweep of ``shard``: what it placed and reported."""
    pool = shards.pool(shard)
    placed = reported = 0
    for payment in await payments.unmaterialized(pool, settings.psp_sweep_grace, BATCH):
        placed += await payment_service.place(shards, payment["id"], orjson.loads(payment["orders"]))
    for order in await payments.unreported(pool, settings.psp_sweep_grace, BATCH):
        await report(shards, order["id"], order["payment_id"], order["status"])
        reported += 1
    return {"payments_placed": placed, "results_reported": reported}
