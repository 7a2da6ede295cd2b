"""Exponential backoff with full jitter for reconnect loops, and a sleep that a stop request cuts short."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of ``initial * factor**n`` seconds capped at ``maximum``, each drawn from [delay/2, delay]."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    _failures: int = field(default=0, init=False)

    def next(self) -> float:
        delay = min(self.maximum, self.initial * self.factor**self._failures)
        self._failures += 1
        # Half-jitter: spreads reconnecting processes apart without ever retrying at once.
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._failures = 0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
