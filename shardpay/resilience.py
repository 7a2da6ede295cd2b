"""Talking to a party that fails: retries with exponential backoff and full jitter, and a circuit breaker.

Both are plain rules over a clock, with no I/O, so that unit tests drive them with a fake clock.
"""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


def full_jitter(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """The wait before retry ``attempt`` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))] ("full
    jitter", so that many clients failing together do not retry together)."""
    return float(rng() * min(cap, base * 2 ** max(0, attempt - 1)))


class State(enum.Enum):
    CLOSED = "closed"  # calls go
    OPEN = "open"  # calls stop until the cooldown ends
    HALF_OPEN = "half_open"  # one call at a time probes whether the other side is back


@dataclass
class Breaker:
    """Opens when at least ``ratio`` of the last ``window`` calls failed (once ``minimum`` calls were seen); stays
    open ``cooldown`` seconds; then lets one probe through: its success closes the breaker, its failure opens it
    again. A failure is the other side not answering properly (a timeout, a reset, a 5xx), never a business
    answer (a declined card is a success here)."""

    name: str
    window: int = 20
    minimum: int = 10
    ratio: float = 0.8
    cooldown: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _results: deque[bool] = field(default_factory=deque)
    _opened_at: float | None = None
    _probing: bool = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self.clock() - self._opened_at < self.cooldown:
            return State.OPEN
        return State.HALF_OPEN

    def capacity(self, wanted: int) -> int:
        """How many of ``wanted`` calls may start now: all when closed, none when open, one probe at a time when
        half open. Each call allowed here must be followed by ``record``."""
        state = self.state
        if state is State.CLOSED:
            return wanted
        if state is State.OPEN or self._probing or wanted == 0:
            return 0
        self._probing = True
        return 1

    def allow(self) -> bool:
        return self.capacity(1) == 1

    def record(self, ok: bool) -> None:
        if self._opened_at is not None:
            self._probing = False
            if ok and self.state is State.HALF_OPEN:
                self._opened_at = None
                self._results.clear()
            elif not ok:
                self._opened_at = self.clock()
            return
        self._results.append(ok)
        if len(self._results) > self.window:
            self._results.popleft()
        failed = self._results.count(False)
        if len(self._results) >= self.minimum and failed >= self.ratio * len(self._results):
            self._opened_at = self.clock()

    def release(self) -> None:
        """A call allowed by ``capacity`` that did not happen after all."""
        self._probing = False

    def retry_in(self) -> float:
        """Seconds until the breaker lets a call through again (0 when it does now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self._opened_at))
