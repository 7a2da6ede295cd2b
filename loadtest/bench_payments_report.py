"""The payments scenario's figures, from timestamps already read out of the databases (no I/O here): payments
per second created and finished in the measured window, the time from a payment's creation to its last order
being final, where that time goes, and the lines the summary prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The three legs of a payment's way, each between two timestamps the databases keep (PostgreSQL's now(), the
# start of the transaction that wrote the row; every database is on one server, so one clock).
STAGES = {
    "placed": "created → order placed on its wallet's shard (the gateway's request)",
    "charged": "placed → charge recorded at the PSP (executor: claim, read, call, 5 ms latency)",
    "final": "charged → order final in its shard (the answer, the executor's finishing transaction)",
}


@dataclass(frozen=True)
class Order:
    id: str
    payment_id: str
    status: str
    placed: float  # payment_orders.created_at, Unix seconds
    final: float | None  # payment_orders.updated_at once the status is final


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50, p90, p99, max and mean, rounded to 0.1 (the values' unit: milliseconds here)."""
    if not values:
        return {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {
        "n": len(ordered), "p50": round(rank(50), 1), "p90": round(rank(90), 1), "p99": round(rank(99), 1),
        "max": round(ordered[-1], 1), "mean": round(sum(ordered) / len(ordered), 1),
    }  # fmt: skip


def end_to_end(
    created: dict[str, float], orders: Sequence[Order], charged: dict[str, float], window: tuple[float, float]
) -> dict[str, Any]:
    """``created``: payment id → its creation (Unix s); ``charged``: order id → when the PSP recorded its charge.

    The payments created inside ``window`` (the measured load) are the measured ones: their number over the
    window is the creation rate; over the time from the window's start to the last of them being final, the end
    to end rate (``completed``: those final by then). Finals inside the window over its length are the rate at
    which payments finished while the load ran. The time to final and its stages are the measured payments'.
    """
    start, end = window
    by_payment: dict[str, list[Order]] = {}
    for order in orders:
        by_payment.setdefault(order.payment_id, []).append(order)
    final: dict[str, float] = {}
    for payment_id, mine in by_payment.items():
        times = [o.final for o in mine]
        if all(t is not None for t in times):
            final[payment_id] = max(t for t in times if t is not None)
    measured = [p for p, at in created.items() if start <= at < end]
    seconds = max(end - start, 1e-9)
    finished = sorted(at for at in final.values() if start <= at < end)
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for payment_id in measured:
        for o in by_payment.get(payment_id, []):
            stages["placed"].append(1000 * (o.placed - created[payment_id]))
            if o.id in charged:
                stages["charged"].append(1000 * (charged[o.id] - o.placed))
                if o.final is not None:
                    stages["final"].append(1000 * (o.final - charged[o.id]))
    completed = [final[p] for p in measured if p in final]
    span = max(completed, default=end) - start
    timeline = [0] * max(1, math.ceil(seconds - 1e-9))
    for at in finished:
        timeline[min(len(timeline) - 1, int(at - start))] += 1
    return {
        "window_s": round(seconds, 3), "created": len(measured), "created_per_s": round(len(measured) / seconds, 1),
        "finished": len(finished), "finished_per_s": round(len(finished) / seconds, 1),
        "unfinished": len(measured) - len(completed), "completed": len(completed),
        "end_to_end_s": round(span, 3), "end_to_end_per_s": round(len(completed) / max(span, 1e-9), 1),
        "to_final_ms": percentiles([1000 * (final[p] - created[p]) for p in measured if p in final]),
        "stages_ms": {name: percentiles(values) for name, values in stages.items()},
        "finals_timeline": timeline,
    }  # fmt: skip


def cpu_per_payment(cpu: dict[str, Any], completed: int) -> list[dict[str, Any]]:
    """Each process's CPU per measured payment (µs), and the machine's busy total: the CPU table spans the load
    and its drain, so it holds the measured payments' whole cost."""
    if not completed:
        return []
    rows = [{"process": r["process"], "us": round(1e6 * r["cpu_s"] / completed)} for r in cpu["processes"]]
    rows.append({"process": "total (busy CPU of the machine)", "us": round(1e6 * cpu["busy_cpu_s"] / completed)})
    return rows


def _pcts(p: dict[str, float]) -> str:
    return "  ".join(f"{k} {p[k]:,.1f}" for k in ("p50", "p90", "p99", "max"))


def summary_lines(result: dict[str, Any], mark: Any) -> list[str]:
    """The payments block of the summary (``mark`` renders a check as PASS/FAIL)."""
    pay = result["payments"]
    e2e = pay["end_to_end"]
    lines = [
        f"  payments    end to end {e2e['end_to_end_per_s']:,.1f}/s: {e2e['completed']:,} created in the "
        f"{e2e['window_s']:.1f} s load, all orders final {e2e['end_to_end_s']:.1f} s after it began",
        f"              while the load ran: created {e2e['created_per_s']:,.1f}/s, finished (all orders final) "
        f"{e2e['finished_per_s']:,.1f}/s",
        f"  to final ms {_pcts(e2e['to_final_ms'])}   (a payment's creation → its last order final, "
        "from the shards' timestamps)",
    ]
    for name, text in STAGES.items():
        lines.append(f"    {text:<84} {_pcts(e2e['stages_ms'][name])}")
    s = pay["settle"]
    lines.append(
        f"  settle      {s['processing_at_end_of_load']:,} orders processing when the load stopped, "
        f"{s['processing']:,} after {s['seconds']} s  {mark(s['settled'])}"
    )
    lines.append(f"  statuses    payments {pay['statuses']['payments']}  orders {pay['statuses']['orders']}  "
                 f"{mark(result['checks'].get('all_succeeded', False))}")  # fmt: skip
    b = pay["balances"]
    lines.append(
        f"  balances    {b['wallets']:,} wallets: seeded + succeeded orders, pending 0 ({b['wrong']} wrong); "
        f"wallets {b['available']:,} = seeded {b['seeded']:,} + paid in {b['paid_in']:,}, psp_clearing "
        f"{b['psp_clearing']:,}, funding {b['funding']:,}  {mark(b['ok'])}"
    )
    c = pay["charges"]
    lines.append(
        f"  psp         {c['charges']:,} charges at the simulator for {c['orders']:,} orders, {c['keys_twice']} keys "
        f"charged twice, {c['missing']} orders without a charge, {c['not_succeeded']} not succeeded  {mark(c['ok'])}"
    )
    e = pay["effects"]
    lines.append(
        f"  effects     {e['payments']:,} payments for {e['fresh_201']:,} fresh 201s (+{e['unknown_outcome']:,} of "
        f"unknown outcome); {e['duplicated_keys']} keys stored twice  {mark(e['ok'])}"
    )
    if pay.get("webhooks"):
        lines.append(f"  webhooks    the simulator's webhooks to the gateway, by state: {pay['webhooks']}")
    return lines


def cpu_lines(result: dict[str, Any]) -> list[str]:
    rows = result["payments"].get("cpu_per_payment") or []
    if not rows:
        return []
    lines = ["  CPU per payment (µs: the CPU table, over the load and its drain, ÷ the payments created in the load)"]
    lines += [f"    {row['process']:<42} {row['us']:>10,}" for row in rows]
    return lines
