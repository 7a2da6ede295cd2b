"""What the running simulator holds: its pool, the faults in force, its call counters, its wake-up signal.

Faults are kept in the database (one row, re-read at start-up, so a restart mid-drill keeps them) and cached
here: the simulator is one process, and every change goes through ``set_faults``. The call counters of
``/sim/stats`` live only here: they count this process's calls since it started or was reset.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request

from pspsim.faults import Faults, from_stored
from shardpay.config import Settings


class Sim:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.faults = Faults()
        self.stats: defaultdict[str, Counter[str]] = defaultdict(Counter)
        # Set after a commit that queued a webhook or a timer, so the workers need not wait for their next poll.
        self.wake = asyncio.Event()

    async def load_faults(self) -> None:
        stored = await self.pool.fetchval("SELECT body FROM faults WHERE id = 1")
        self.faults = from_stored(orjson.loads(stored)) if stored is not None else Faults()

    async def set_faults(self, faults: Faults) -> None:
        body = orjson.dumps(faults.as_dict()).decode()
        await self.pool.execute(
            "INSERT INTO faults (id, body) VALUES (1, $1::jsonb) ON CONFLICT (id) DO UPDATE SET body = $1::jsonb", body
        )
        self.faults = faults

    def count(self, endpoint: str, answer: str) -> None:
        self.stats[endpoint][answer] += 1

    def stats_report(self) -> dict[str, Any]:
        endpoints = {
            name: {"calls": sum(answers.values()), "answers": dict(sorted(answers.items()))}
            for name, answers in sorted(self.stats.items())
        }
        return {"object": "stats", "endpoints": endpoints}


def sim_of(request: Request) -> Sim:
    sim: Sim = request.app.state.sim
    return sim
