"""What the load saw around the fault: when errors began, when service was whole again (RTO), errors by status.

An attempt failed if it got no HTTP answer (refused, reset, timed out), a 5xx, a 409 (its key still locked by
an attempt whose outcome was unknown) or a 429. The RTO is the time from the fault to the answer of the last
failed attempt: after it, every attempt of every request succeeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shardpay.drills.load import RETRY_STATUSES, Attempt, Request


def failed(attempt: Attempt) -> bool:
    return attempt.status is None or attempt.status >= 500 or attempt.status in RETRY_STATUSES


def _label(attempt: Attempt) -> str:
    return f"no_answer:{attempt.error}" if attempt.status is None else str(attempt.status)


@dataclass(frozen=True)
class Window:
    fault_at: float  # seconds since the load started
    shard: int | None  # for a shard fault: errors elsewhere are reported apart (there must be none)


def summarize(requests: Iterable[Request], window: Window) -> dict[str, Any]:
    requests = list(requests)
    failures = [(r, a) for r in requests for a in r.attempts if failed(a)]
    before = [a for _, a in failures if a.answered < window.fault_at]
    after = [(r, a) for r, a in failures if a.answered >= window.fault_at]
    elsewhere = [a for r, a in after if window.shard is not None and window.shard not in r.shards]
    transfers = [r for r in requests if r.kind == "transfer"]
    return {
        "requests": len(requests),
        "attempts": sum(len(r.attempts) for r in requests),
        "transfers_acknowledged": sum(1 for r in transfers if r.acked is not None),
        "transfers_insufficient_funds": sum(1 for r in transfers if r.final == 402),
        "first_error_s": _first(after, window),
        "rto_s": round(max(a.answered for _, a in after) - window.fault_at, 2) if after else 0.0,
        "errors_by_status": dict(Counter(_label(a) for _, a in after)),
        # Failed first tries of requests first sent after the fault: what a new caller meets. (A request in
        # flight at the fault may meet its own earlier try's lock, through HAProxy's retry or its own: 409.)
        "first_try_errors": dict(
            Counter(_label(a) for r, a in after if a is r.attempts[0] and a.sent >= window.fault_at)
        ),
        "errors_before_fault": len(before),
        "errors_on_other_shards": len(elsewhere) if window.shard is not None else None,
        "status_500": sum(1 for r in requests for a in r.attempts if a.status == 500),
        "gave_up": sum(1 for r in requests if r.final is None),
        # Answers that end a request other than 200, 201 and 402 (a 400, 404, 422 would be a bug in the drill).
        "unexpected_final": dict(Counter(str(r.final) for r in requests if r.final not in (None, 200, 201, 402))),
    }


def _first(after: list[tuple[Request, Attempt]], window: Window) -> float | None:
    if not after:
        return None
    return round(min(a.answered for _, a in after) - window.fault_at, 2)
