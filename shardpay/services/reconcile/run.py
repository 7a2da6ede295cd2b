"""One reconciliation run: read and stage the file, compare on every shard, fix, book fees, store the run.

Order matters for "nothing from a malformed file is fixed or stored": every line is checked while it is staged
(on the run's own connections, in temporary tables), and only once the last line has passed does anything
change: the fixes, the fees, the stored run. The day's advisory lock is taken before the first line is staged
and held until the run is stored, in the control transaction that stores it.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg

from events.logs import emit
from shardpay.config import Settings
from shardpay.domain.settlement import CATEGORIES, FOR_REVIEW, MalformedFile, check_day, check_header, parse_line
from shardpay.services.reconcile import fix
from shardpay.services.reconcile.source import BadInput, Source
from shardpay.services.reconcile.staging import Staging, bounds, connect, connections
from shards import reconcile, reconcile_runs
from shards.pools import Shards
from shards.reconcile_runs import Summary

ITEM_PAGE = 1000


@dataclass(frozen=True)
class Request:
    source: Source
    day: date | None  # None: the day of the file's first line
    trigger: str = "cli"  # cli | daily


@dataclass(frozen=True)
class Result:
    run_id: int
    day: date
    summary: Summary


class AlreadyDone(Exception):
    """The scheduler's run of that day is stored already: a scheduled run happens once a day."""


class _Run:
    """The control side of a run: its transaction, lock and row, from the moment its day is known."""

    def __init__(self, control: asyncpg.Connection, request: Request, staging: Staging) -> None:
        self.control, self.request, self.staging = control, request, staging
        self.run_id = 0

    async def begin(self, day: date) -> None:
        await reconcile_runs.lock_day(self.control, day)
        if self.request.trigger == "daily" and await reconcile_runs.daily_done(self.control, day):
            raise AlreadyDone(day.isoformat())
        started = datetime.now(UTC)
        self.run_id = await reconcile_runs.start(self.control, day, self.request.trigger, self.request.source.name,
                                                 started)  # fmt: skip
        await self.staging.open()


async def reconcile_file(settings: Settings, shards: Shards, request: Request) -> Result:
    """Run it; MalformedFile or BadInput if the input is bad (then nothing changed), AlreadyDone for a daily run
    that was done; a dependency's error if one failed (fixes already made stand: they are complete and final)."""
    began = time.monotonic()
    async with connections(settings) as conns:
        control = await connect(settings.control_dsn, settings)
        try:
            async with control.transaction():
                result = await _reconcile(shards, request, Staging(conns, shards.slots), control)
        finally:
            await control.close()
    _log(result, request, time.monotonic() - began)
    return result


async def _reconcile(shards: Shards, request: Request, staging: Staging, control: asyncpg.Connection) -> Result:
    run = _Run(control, request, staging)
    day = await read(request, staging, run.begin)
    await staging.compare(day)
    await staging.each(lambda shard, conn: fix.fix_shard(shards, shard, conn))
    await staging.each(lambda shard, conn: _after_fixes(conn, day))
    summary = summarise(staging.lines, [r for rows in await staging.each(_stats) for r in rows])
    for shard, conn in enumerate(staging.conns):  # one after the other: they share the control connection
        await _keep_items(control, run.run_id, shard, conn)
    await reconcile_runs.finish(control, run.run_id, summary)
    return Result(run.run_id, day, summary)


async def _after_fixes(conn: asyncpg.Connection, day: date) -> None:
    """What the run keeps on a shard once its records are settled: fees, and the lines of other days' records."""
    await reconcile.book_fees(conn, day)
    await reconcile.remember_other_days(conn, day, *bounds(day))


async def _stats(shard: int, conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await reconcile.stats(conn)


async def read(request: Request, staging: Staging, begin: Callable[[date], Awaitable[None]]) -> date:
    """Check and stage every line; the day is known (and ``begin`` called) before the first line is staged,
    and, for the PSP's file, before it is asked for."""
    day = request.day
    if day is not None:
        await begin(day)
    async with contextlib.aclosing(request.source.lines()) as lines:
        header = await anext(lines, None)
        if header is None:
            raise MalformedFile(1, None, "", "is missing: the file is empty (no header)")
        check_header(header)
        number = 1
        async for text in lines:
            number += 1
            line = parse_line(text, number)
            if day is None:
                day = line.settled_at.date()
                await begin(day)
            check_day(line, day)
            await staging.add(line)
    if day is None:
        raise BadInput("the file has a header and no lines, so nothing tells its day: give --date YYYY-MM-DD")
    return day


async def _keep_items(control: asyncpg.Connection, run_id: int, shard: int, conn: asyncpg.Connection) -> None:
    """Copy this shard's records that are not plainly matched into the run's items, a page at a time."""
    async with conn.transaction(readonly=True):  # a cursor lives in a transaction
        page: list[asyncpg.Record] = []
        async for row in conn.cursor(reconcile.ITEMS, prefetch=ITEM_PAGE):
            page.append(row)
            if len(page) >= ITEM_PAGE:
                await reconcile_runs.copy_items(control, run_id, shard, page)
                page = []
        if page:
            await reconcile_runs.copy_items(control, run_id, shard, page)


def summarise(lines: int, rows: list[asyncpg.Record]) -> Summary:
    """Every shard's figures per category and currency, added up."""
    counts = dict.fromkeys(CATEGORIES, 0)
    totals: defaultdict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    fees: dict[str, dict[str, int]] = {}
    fixed = 0
    for r in rows:
        counts[r["category"]] += r["records"]
        figure = totals[r["category"]].setdefault(r["currency"], {"records": 0, "psp_amount": 0, "shardpay_amount": 0})
        figure["records"] += r["records"]
        figure["psp_amount"] += int(r["psp_amount"])
        figure["shardpay_amount"] += int(r["our_amount"])
        fixed += r["fixed"]
        if r["fee_lines"]:
            fee = fees.setdefault(r["currency"], {"lines": 0, "amount": 0})
            fee["lines"] += r["fee_lines"]
            fee["amount"] += int(r["fees"])
    review = sum(counts[c] for c in FOR_REVIEW) + counts["missing_internal"] - fixed
    return Summary(lines, sum(counts.values()), counts, dict(totals), {"booked": fees}, fixed, review,
                   1 if review else 0)  # fmt: skip


def _log(result: Result, request: Request, seconds: float) -> None:
    s = result.summary
    emit("reconcile.run", run=result.run_id, date=result.day.isoformat(), trigger=request.trigger,
         source=request.source.name, exit_status=s.exit_status, lines=s.lines, records=s.records, counts=s.counts,
         fixed=s.fixed, needs_review=s.needs_review, fees=s.fees["booked"], duration_s=round(seconds, 3))  # fmt: skip
