"""The daily reconciliation (``shardpay reconcile --daily``, a child of ``shardpay run``): every day at
``SHARDPAY_RECONCILE_AT`` (UTC) the previous day's PSP file is reconciled, once.

Once: the scheduler's run of a day is stored with trigger 'daily', and a run checks for it under the day's lock,
so a restart, or two schedulers, run a day once. On start it catches up on the latest day already due, no
further back. A run that cannot happen (the PSP or a database down, a malformed file) is logged and tried again
``SHARDPAY_RECONCILE_RETRY`` seconds later. Each run logs one ``reconcile.run`` line (run.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

import psp
from events.logs import emit
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.domain.settlement import MalformedFile
from shardpay.services.reconcile.run import AlreadyDone, Request, reconcile_file
from shardpay.services.reconcile.source import BadInput, PspSource
from shards.errors import TRANSIENT
from shards.pools import open_shards

# What a scheduled run may meet and live through: it is logged and tried again later.
FAILURES: tuple[type[BaseException], ...] = (
    *TRANSIENT, asyncpg.PostgresError, psp.PspError, ApiError, MalformedFile, BadInput,
)  # fmt: skip


def due_day(now: datetime, at: time) -> date:
    """The latest day whose reconciliation is due by ``now``: day D is due at ``at`` on D + 1."""
    today = now.astimezone(UTC).date()
    passed = now.astimezone(UTC).time() >= at
    return today - timedelta(days=1 if passed else 2)


def next_due(now: datetime, at: time) -> datetime:
    """When the next day becomes due, after ``now``."""
    return datetime.combine(due_day(now, at) + timedelta(days=2), at, UTC)


async def run_once(settings: Settings, day: date, trigger: str = "daily") -> None:
    """The PSP's file of ``day``, reconciled (skipped if the scheduler's run of it is stored)."""
    client = psp.connect(settings)
    try:
        async with open_shards(settings, pool_max=4) as shards:
            await reconcile_file(settings, shards, Request(PspSource(client, day), day, trigger))
    except AlreadyDone:
        emit("reconcile.skipped", date=day.isoformat(), reason="the scheduled run of this day is stored")
    finally:
        await client.aclose()


async def run_daily(settings: Settings, stop: asyncio.Event) -> None:
    """Until ``stop``: each due day once, then sleep until the next is due."""
    emit("reconcile.scheduled", at=settings.reconcile_at.strftime("%H:%M"), tz="UTC")
    while not stop.is_set():
        day = due_day(datetime.now(UTC), settings.reconcile_at)
        try:
            await run_once(settings, day)
            wait = (next_due(datetime.now(UTC), settings.reconcile_at) - datetime.now(UTC)).total_seconds()
        except FAILURES as exc:
            emit("reconcile.failed", date=day.isoformat(), trigger="daily", error=type(exc).__name__,
                 detail=str(exc)[:300], retry_in_s=settings.reconcile_retry)  # fmt: skip
            wait = settings.reconcile_retry
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(wait, 1.0))
