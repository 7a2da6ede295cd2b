"""Delivers the queued webhooks, signed, retrying anything but a 2xx on the backoff schedule, then gives up.

Events are claimed with a lease (``due_at`` pushed past the delivery's longest time), so a simulator killed
mid-delivery sends them again after a restart: at least once, as a real PSP. ``webhook_reorder`` lets due events
gather for ``webhook_reorder_window_ms`` and sends each window one by one in shuffled order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import orjson

from events.signing import sign
from pspsim.db import UNREACHABLE
from pspsim.state import Sim

HEADER = "PSP-Signature"
POLL = 0.1
CONCURRENCY = 16
JITTER = 0.2

_CLAIM = """
UPDATE events SET due_at = now() + $2::interval WHERE seq IN (
    SELECT seq FROM events WHERE state = 'pending' AND due_at <= now() - $1::interval
    ORDER BY due_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING seq, id, body, copies, attempts
"""
_RELEASE = "UPDATE events SET due_at = now() WHERE seq = ANY($1::bigint[]) AND state = 'pending'"
_DONE = """
UPDATE events SET state = $2, attempts = $3, last_status = $4, last_error = $5, due_at = now() + $6::interval,
                  delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
WHERE seq = $1
"""


def next_try(attempts: int, backoff: tuple[float, ...], jitter: float) -> float | None:
    """Seconds until the next try after ``attempts`` failed ones, or None once the schedule is spent."""
    if attempts > len(backoff):
        return None
    return backoff[attempts - 1] * (1 + jitter)


class Sender:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.http = httpx.AsyncClient(timeout=sim.settings.psp_webhook_timeout, trust_env=False,
                                      limits=httpx.Limits(max_connections=CONCURRENCY))  # fmt: skip
        # Claimed and not yet finished (seq -> its delivery), released if the simulator stops mid-delivery.
        self._inflight: dict[int, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Deliver until cancelled; a database that is down is waited out."""
        try:
            while True:
                try:
                    busy = await self.round()
                except UNREACHABLE as exc:
                    _log("webhook_sender_waiting", error=exc.__class__.__name__)
                    busy = False
                    await asyncio.sleep(1)
                if not busy:
                    await self._idle()
        finally:
            await asyncio.shield(self._stop())

    async def _stop(self) -> None:
        """Cancel what is in flight and make it due now, not when its lease ends; close the client."""
        claimed = sorted(self._inflight)
        for task in self._inflight.values():
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        with contextlib.suppress(*UNREACHABLE):
            await self.sim.pool.execute(_RELEASE, claimed)
        await self.http.aclose()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sim.wake.wait(), POLL)
        self.sim.wake.clear()

    async def round(self) -> bool:
        """Claim what is due, up to the free delivery slots, and start delivering it; False if nothing was.
        A slow receiver holds its slots, not the sender: the next round claims while it waits."""
        free = CONCURRENCY - len(self._inflight)
        if free <= 0:
            await asyncio.wait(self._inflight.values(), timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
            return True
        faults = self.sim.faults
        window = timedelta(milliseconds=faults.webhook_reorder_window_ms if faults.webhook_reorder else 0)
        lease = timedelta(seconds=self.sim.settings.psp_webhook_timeout * 2 * CONCURRENCY + 30)
        rows = await self.sim.pool.fetch(_CLAIM, window, lease, free)
        if faults.webhook_reorder:
            # One task sends the shuffled window one event after another, so the receiver sees that order.
            self._track(rows, self._in_turn(random.sample(rows, len(rows))))
        else:
            for row in rows:
                self._track([row], self._deliver(row))
        return bool(rows)

    def _track(self, rows: list[asyncpg.Record], work: Coroutine[Any, Any, None]) -> None:
        if not rows:
            work.close()
            return
        task = asyncio.create_task(work)
        for row in rows:
            self._inflight[row["seq"]] = task

    async def _in_turn(self, rows: list[asyncpg.Record]) -> None:
        for row in rows:
            await self._deliver(row)

    async def _deliver(self, row: asyncpg.Record) -> None:
        try:
            status, error = None, None
            for _ in range(row["copies"]):
                status, error = await self._post(row["body"])
            state, attempts = await self._record(row, status, error)
            _log("webhook", event_id=row["id"], status=status, error=error, attempts=attempts, state=state)
        except UNREACHABLE as exc:
            # Sent but not recorded: the lease ends and it goes again (at least once, as promised).
            _log("webhook_unrecorded", event_id=row["id"], error=exc.__class__.__name__)
        finally:
            self._inflight.pop(row["seq"], None)

    async def _record(self, row: asyncpg.Record, status: int | None, error: str | None) -> tuple[str, int]:
        delivered = status is not None and 200 <= status < 300
        attempts = row["attempts"] + 1
        wait = 0.0 if delivered else next_try(attempts, self.sim.settings.psp_webhook_backoff,
                                              random.uniform(-JITTER, JITTER))  # fmt: skip
        state = "delivered" if delivered else ("dead" if wait is None else "pending")
        await self.sim.pool.execute(_DONE, row["seq"], state, attempts, status, error, timedelta(seconds=wait or 0))
        return state, attempts

    async def _post(self, body: bytes) -> tuple[int | None, str | None]:
        headers = {"Content-Type": "application/json", HEADER: sign(self.sim.settings.psp_webhook_secret, body,
                                                                    int(time.time()))}  # fmt: skip
        try:
            response = await self.http.post(self.sim.settings.psp_webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, exc.__class__.__name__
        return response.status_code, None


def _log(event: str, **fields: object) -> None:
    sys.stdout.write(orjson.dumps({"ts": round(time.time(), 3), "event": event, **fields}).decode() + "\n")
