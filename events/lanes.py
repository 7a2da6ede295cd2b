"""Merchants' lanes: each merchant its own connection pool and its own cap on webhook POSTs at once.

A lane is one merchant's HTTP client (``events.egress``, as many connections as the cap) and as many slots. A
POST holds a slot; its deadline starts only once it has one, so it counts the POST's own connection and
exchange, never a wait for another merchant's connections or for its own merchant's slots. A merchant whose
endpoint hangs therefore ties up its own slots and nothing else.

An event gets a slot within ``wait`` seconds or not at all (``None``): the caller defers it through the delay
queue instead of holding its message, and so its batch, behind a merchant that is not keeping up. It does not
even wait when the queue ahead of it cannot clear in time at the lane's recent pace, so a merchant whose POSTs
all take the timeout holds its cap of events in the consumer and few more (none more at the 5 s default).

Lanes live in an LRU: one idle for longer than a connection is kept alive has nothing worth keeping and is
closed, as are the least recently used idle ones past ``IDLE_LANES``; a lane in use is never closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from events.egress import KEEPALIVE

# POSTs at once in the whole process, whatever the number of merchants: each is a socket, and this stays far
# below the usual open-files limit of 1024 with room for the database and broker connections. A hung merchant
# holds only its cap of them.
MAX_POSTS = 512
IDLE_LANES = 256  # idle merchants' clients kept, with their keep-alive connections
SWEEP_EVERY = 1.0  # seconds between two looks for lanes to close
PACE_WEIGHT = 0.2  # of the newest POST in a lane's moving average of POST durations


@dataclass
class Lane:
    client: httpx.AsyncClient
    cap: int
    slots: asyncio.Semaphore = field(init=False)
    users: int = 0  # events holding or waiting for a slot: a lane with users is never closed
    waiting: int = 0
    pace: float = 0.0  # seconds per POST, a moving average; 0 until the first POST ends
    used: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.cap)

    def worth_waiting(self, wait: float) -> bool:
        """Whether this event and the ones queued ahead could all get a slot within ``wait`` at the recent pace."""
        return (self.waiting + 1) * self.pace / self.cap <= wait

    def took(self, seconds: float) -> None:
        self.pace = seconds if self.pace == 0 else (1 - PACE_WEIGHT) * self.pace + PACE_WEIGHT * seconds


class Lanes:
    """The lanes of every merchant with webhooks under way; ``open_client(cap)`` makes a merchant's client."""

    def __init__(
        self, cap: int, open_client: Callable[[int], httpx.AsyncClient], total: int = MAX_POSTS, keep: int = IDLE_LANES
    ) -> None:  # fmt: skip
        self._cap = cap
        self._open_client = open_client
        self._total = asyncio.Semaphore(total)
        self._keep = keep
        self._lanes: OrderedDict[str, Lane] = OrderedDict()
        self._swept = time.monotonic()

    def __len__(self) -> int:
        return len(self._lanes)

    @contextlib.asynccontextmanager
    async def slot(self, merchant: str, wait: float) -> AsyncIterator[httpx.AsyncClient | None]:
        """The merchant's client while this holds one of its slots, or None if none came free within ``wait``."""
        lane = self._lane(merchant)
        lane.users += 1
        try:
            if not await self._enter(lane, wait):
                yield None
                return
            started = time.monotonic()
            try:
                yield lane.client
            finally:
                lane.took(time.monotonic() - started)
                self._total.release()
                lane.slots.release()
        finally:
            lane.users -= 1
            lane.used = time.monotonic()
        await self._sweep()

    async def aclose(self) -> None:
        lanes, self._lanes = list(self._lanes.values()), OrderedDict()
        await asyncio.gather(*(lane.client.aclose() for lane in lanes), return_exceptions=True)

    def _lane(self, merchant: str) -> Lane:
        lane = self._lanes.get(merchant)
        if lane is None:
            lane = self._lanes[merchant] = Lane(self._open_client(self._cap), self._cap)
        self._lanes.move_to_end(merchant)
        return lane

    async def _enter(self, lane: Lane, wait: float) -> bool:
        """Take a slot of the lane, then one of the process, both within ``wait`` seconds, or neither. The
        lane's first: a merchant that waits for its own slots never holds one of everybody's meanwhile."""
        if lane.slots.locked() and not lane.worth_waiting(wait):
            return False
        deadline = time.monotonic() + wait
        lane.waiting += 1
        try:
            got = await _take(lane.slots, wait)
        finally:
            lane.waiting -= 1
        if got and await _take(self._total, deadline - time.monotonic()):
            return True
        if got:
            lane.slots.release()
        return False

    async def _sweep(self) -> None:
        """Close lanes idle for longer than a connection is kept alive, and the least recently used idle ones
        past ``keep``."""
        now = time.monotonic()
        if now - self._swept < SWEEP_EVERY and len(self._lanes) <= self._keep:
            return
        self._swept = now
        idle = [merchant for merchant, lane in self._lanes.items() if lane.users == 0]  # least recent first
        excess = len(self._lanes) - self._keep
        stale = [m for i, m in enumerate(idle) if i < excess or now - self._lanes[m].used > KEEPALIVE]
        closing = [self._lanes.pop(merchant).client for merchant in stale]
        await asyncio.gather(*(client.aclose() for client in closing), return_exceptions=True)


async def _take(semaphore: asyncio.Semaphore, within: float) -> bool:
    if not semaphore.locked():
        await semaphore.acquire()  # returns at once
        return True
    try:
        async with asyncio.timeout(max(within, 0.0)):
            await semaphore.acquire()
    except TimeoutError:
        return False
    return True
