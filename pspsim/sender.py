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
from datetime import timedelta

import asyncpg
import httpx
import orjson

from events.signing import sign
from pspsim.state import Sim
from shards.errors import TRANSIENT

HEADER = "PSP-Signature"
BATCH = 100
POLL = 0.1
CONCURRENCY = 16
JITTER = 0.2

_CLAIM = """
UPDATE events SET due_at = now() + $2::interval WHERE seq IN (
    SELECT seq FROM events WHERE state = 'pending' AND due_at <= now() - $1::interval
    ORDER BY due_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING seq, id, body, copies, attempts
"""
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

    async def run(self) -> None:
        """Deliver until cancelled; a database that is down is waited out."""
        try:
            while True:
                try:
                    busy = await self.round()
                except TRANSIENT as exc:
                    _log("webhook_sender_waiting", error=exc.__class__.__name__)
                    busy = False
                    await asyncio.sleep(1)
                if not busy:
                    await self._idle()
        finally:
            await asyncio.shield(self.http.aclose())  # the client's sockets are closed even when cancelled

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sim.wake.wait(), POLL)
        self.sim.wake.clear()

    async def round(self) -> bool:
        faults = self.sim.faults
        window = timedelta(milliseconds=faults.webhook_reorder_window_ms if faults.webhook_reorder else 0)
        lease = timedelta(seconds=self.sim.settings.psp_webhook_timeout * 2 * CONCURRENCY + 30)
        rows = await self.sim.pool.fetch(_CLAIM, window, lease, BATCH)
        if faults.webhook_reorder:
            rows = random.sample(rows, len(rows))
            for row in rows:
                await self._deliver(row)
        else:
            gate = asyncio.Semaphore(CONCURRENCY)
            await asyncio.gather(*(self._gated(gate, row) for row in sorted(rows, key=lambda r: r["seq"])))
        return bool(rows)

    async def _gated(self, gate: asyncio.Semaphore, row: asyncpg.Record) -> None:
        async with gate:
            await self._deliver(row)

    async def _deliver(self, row: asyncpg.Record) -> None:
        status, error = None, None
        for _ in range(row["copies"]):
            status, error = await self._post(row["body"])
        delivered = status is not None and 200 <= status < 300
        attempts = row["attempts"] + 1
        wait = 0.0 if delivered else next_try(attempts, self.sim.settings.psp_webhook_backoff,
                                              random.uniform(-JITTER, JITTER))  # fmt: skip
        state = "delivered" if delivered else ("dead" if wait is None else "pending")
        await self.sim.pool.execute(_DONE, row["seq"], state, attempts, status, error, timedelta(seconds=wait or 0))
        _log("webhook", event_id=row["id"], status=status, error=error, attempts=attempts, state=state)

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
