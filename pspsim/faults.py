"""The fault knobs of ``PUT /sim/faults``: what they are, how a patch is validated and merged. Pure rules.

Additions to PSP.md's list, each off or at a harmless default: ``timeout_hold_ms`` (how long an answer under
``timeout_after_commit_rate`` is held), ``dispute_after_ms`` (when a 0259 card's charge is disputed),
``refund_failure_rate`` (a refund fails, for shardpay's ``refund.failed`` path), ``malformed_rate`` (a POST is
answered 200 with a body that is not the object asked for, and nothing is done: a PSP's bug, for shardpay's
dead-letter path) and
``webhook_reorder_window_ms`` (how long events gather before a shuffled window is delivered).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

RATES = frozenset({
    "decline_rate", "error_rate", "reset_rate", "timeout_after_commit_rate", "pending_rate",
    "webhook_drop_rate", "webhook_duplicate_rate", "refund_failure_rate", "malformed_rate",
})  # fmt: skip
DURATIONS = frozenset({
    "latency_ms", "settle_after_ms", "timeout_hold_ms", "webhook_delay_ms", "dispute_after_ms",
    "webhook_reorder_window_ms",
})  # fmt: skip
FLAGS = frozenset({"webhook_reorder", "outage"})
# A day: longer than any caller's timeout; a typo of an extra zero still ends.
MAX_DURATION_MS = 86_400_000


class FaultError(ValueError):
    """A patch field that is unknown or out of range; ``field`` names it, the message gives the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Faults:
    decline_rate: float = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    timeout_after_commit_rate: float = 0.0
    timeout_hold_ms: float = 30_000.0
    latency_ms: float = 0.0
    pending_rate: float = 0.0
    settle_after_ms: float = 1_000.0
    refund_failure_rate: float = 0.0
    malformed_rate: float = 0.0
    dispute_after_ms: float = 2_000.0
    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_delay_ms: float = 0.0
    webhook_reorder: bool = False
    webhook_reorder_window_ms: float = 500.0
    outage: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def merge(current: Faults, patch: Any) -> Faults:
    """``current`` with every field of ``patch`` (a JSON object) replaced; raises FaultError on the first bad
    field, leaving nothing half applied."""
    if not isinstance(patch, dict):
        raise FaultError("body", f"The body must be a JSON object of fault fields, got {patch!r}.")
    changes: dict[str, Any] = {name: _value(name, value) for name, value in patch.items()}
    return dataclasses.replace(current, **changes)


def from_stored(stored: dict[str, Any]) -> Faults:
    """Faults saved by an earlier run; fields it no longer knows are ignored rather than fatal at start-up."""
    known = {f.name for f in dataclasses.fields(Faults)}
    return merge(Faults(), {k: v for k, v in stored.items() if k in known})


def _value(name: str, value: Any) -> float | bool:
    if name in FLAGS:
        if not isinstance(value, bool):
            raise FaultError(name, f"'{name}' must be true or false, got {value!r}.")
        return value
    if name not in RATES | DURATIONS:
        raise FaultError(name, f"Unknown fault '{name}' (value {value!r}).")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(name, f"'{name}' must be a number, got {value!r}.")
    if name in RATES and not 0 <= value <= 1:
        raise FaultError(name, f"'{name}' must be a rate between 0 and 1, got {value!r}.")
    if name in DURATIONS and not 0 <= value <= MAX_DURATION_MS:
        raise FaultError(name, f"'{name}' must be between 0 and {MAX_DURATION_MS} ms, got {value!r}.")
    return float(value)


class Dice(Protocol):
    def random(self) -> float: ...


def rolls(rate: float, dice: Dice = random) -> bool:
    """True with probability ``rate``: never at 0, always at 1."""
    return rate > 0 and dice.random() < rate
