"""The benchmark's results: a run's raw numbers made into its result, the summary it prints, the PNG it draws
and the README's matrix table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from loadtest import bench_capacity as capacity
from loadtest import bench_load as load
from loadtest import bench_payments_report as payments_report
from loadtest.bench_stack import EXPECTED_SETTINGS


def aggregate(run: load.WrkRun, warm: load.WrkRun | None, cpu: dict[str, Any]) -> dict[str, Any]:
    wrk = run.report
    socket_errors = {kind: n for kind, n in wrk["errors"].items() if kind != "status"}
    wrk_cpu = cpu.get("wrk_cpu_s") or 0.0
    per_request_us = 1e6 * wrk_cpu / run.requests if run.requests and wrk_cpu else None
    return {
        "seconds": round(run.seconds, 3), "wall_s": round(run.wall, 2), "requests": run.requests,
        "rps": round(run.requests / run.seconds, 1) if run.seconds else 0.0, "ok": run.ok(),
        "ok_per_s": round(run.ok() / run.seconds, 1) if run.seconds else 0.0, "latency_ms": run.latency_ms(),
        "statuses": dict(sorted(wrk["statuses"].items())), "socket_errors": socket_errors,
        "replayed": wrk["replayed"], "sent": wrk["sent"], "replays_sent": wrk["replays_sent"],
        # request() runs once more than wrk sends (wrk checks the first request), hence the -1.
        "unanswered": max(0, wrk["sent"] - 1 - run.requests), "no_request_id_echo": wrk["unmatched"],
        "warmup": None if warm is None else {
            "requests": warm.requests, "statuses": warm.report["statuses"], "replayed": warm.report["replayed"],
            "unanswered": max(0, warm.report["sent"] - 1 - warm.requests),
            "socket_errors": sum(n for kind, n in warm.report["errors"].items() if kind != "status"),
        },
        "timeline": run.timeline(), "cpu": cpu,
        "wrk_cpu_per_request_us": round(per_request_us, 2) if per_request_us else None,
    } | _items(run, warm)  # fmt: skip


def _items(run: load.WrkRun, warm: load.WrkRun | None) -> dict[str, Any]:
    """The bulk scenario's transfers (a batch's items) by status, and transfers/s; elsewhere a 2xx is one."""
    report = run.report
    items = dict(sorted(report["items"].items())) if "items" in report else None
    transfers = run.ok() if items is None else items.get("201", 0)
    counted = {"transfers": transfers, "transfers_per_s": round(transfers / run.seconds, 1) if run.seconds else 0.0}
    if items is None:
        return counted
    warm_items = dict(warm.report.get("items", {})) if warm is not None else {}
    return counted | {"items": items, "batch": report["batch"], "warmup_items": warm_items}


def _fresh_and_unknown(part: dict[str, Any], items: dict[str, int] | None, batch: int) -> tuple[int, int]:
    statuses = part["statuses"]
    fresh = statuses.get("201", 0) - part["replayed"].get("201", 0)
    errors = part["socket_errors"]
    unknown = part["unanswered"] + (sum(errors.values()) if isinstance(errors, dict) else errors)
    unknown += sum(n for code, n in statuses.items() if code.startswith("5"))
    if items is None:
        return fresh, unknown
    # Bulk: a batch whose answer never came may have moved any of its items; an item's own 503 may have moved.
    item_unknown = sum(n for code, n in items.items() if code.startswith("5"))
    return items.get("201", 0), unknown * batch + item_unknown


def fresh_and_unknown(loaded: dict[str, Any]) -> tuple[int, int]:
    """Fresh (not replayed) 201s of the load and its warm-up, and the requests whose outcome the client never
    learnt (unanswered when wrk stopped, socket errors, 5xx); in the bulk scenario, the items of the batches."""
    bulk = "items" in loaded
    batch = loaded.get("batch", 1)
    fresh, unknown = _fresh_and_unknown(loaded, loaded["items"] if bulk else None, batch)
    if loaded["warmup"]:
        warm_items = loaded.get("warmup_items", {}) if bulk else None
        warm_fresh, warm_unknown = _fresh_and_unknown(loaded["warmup"], warm_items, batch)
        fresh, unknown = fresh + warm_fresh, unknown + warm_unknown
    return fresh, unknown


def effects(loaded: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """No key moved money twice, and every fresh (not replayed) 201 is exactly one transfer in the database.

    The transfers in the database must be at least the fresh 201s and at most those plus the requests whose
    outcome the client never learnt (unanswered when wrk stopped, socket errors, 5xx).
    """
    transfers = state["transfers"]
    fresh, unknown = fresh_and_unknown(loaded)
    rows = transfers["rows"]
    ok = transfers["duplicated_keys"] == 0 and fresh <= rows <= fresh + unknown
    return {
        "ok": ok, "transfers": rows, "duplicated_keys": transfers["duplicated_keys"], "fresh_201": fresh,
        "unknown_outcome": unknown, "by_status": transfers["by_status"], "cross_shard": transfers["cross_shard"],
    }  # fmt: skip


def rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    timeline = result["load"]["timeline"]
    t = [p["t"] for p in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    top.plot(t, [p["rps"] for p in timeline], "o-", markersize=3, label="all responses")
    top.plot(t, [p["ok_rps"] for p in timeline], "s--", markersize=3, label="2xx")
    finals = (result.get("payments") or {}).get("end_to_end", {}).get("finals_timeline")
    if finals:  # payments: when each payment's last order became final, from the shards
        top.plot(range(len(finals)), finals, "^-", markersize=3, label="payments final (all orders)")
    pg = result.get("pgbench") or {}
    if pg.get("tps"):
        top.axhline(pg["tps"], color="grey", linestyle=":", label=f"pgbench {pg['tps']:,.0f} tps")
    top.set_ylabel("throughput (req/s)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)
    bottom.plot(t, [p["p50_ms"] for p in timeline], "o-", markersize=3, label="p50")
    bottom.plot(t, [p["p99_ms"] for p in timeline], "s-", markersize=3, label="p99", color="tab:red")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds into the measured load (one point per second, from wrk)")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="best", fontsize=8)
    lat = result["load"]["latency_ms"]
    fig.suptitle(
        f"shardpay {cfg['scenario']}: {cfg['shards']} shards, {cfg['connections']} connections, "
        f"{cfg['workers']} gateway workers, {cfg['duration']} s — {result['load']['rps']:,.0f} req/s, "
        f"p99 {lat['p99']:.1f} ms — {'PASS' if result['pass'] else 'FAIL'}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(result: dict[str, Any]) -> str:
    cfg = result["config"]
    loaded = result["load"]
    lat = loaded["latency_ms"]
    lines = [
        "",
        f"shardpay bench — {cfg['scenario']}: {cfg['shards']} shards, {cfg['connections']} connections, "
        f"{cfg['workers']} gateway workers, {cfg['duration']} s of wrk "
        f"({cfg['threads']} wrk thread{'s' if cfg['threads'] > 1 else ''}), {cfg['wallets']:,} wallets",
        f"  throughput  {loaded['rps']:>10,.0f} req/s   2xx {loaded['ok_per_s']:,.0f}/s   "
        f"{loaded['requests']:,} responses in {loaded['seconds']:.1f} s"
        + (f"   transfers {loaded['transfers_per_s']:,.0f}/s ({loaded['batch']} a batch; items {loaded['items']})"
           if "items" in loaded else ""),
        "  latency ms  " + "  ".join(f"{k} {lat[k]:,.1f}" for k in ("p50", "p95", "p99", "p99.9", "max")),
        "  statuses    " + "  ".join(f"{code}: {n:,}" for code, n in loaded["statuses"].items())
        + (f"   (replayed: {sum(loaded['replayed'].values()):,})" if loaded["replayed"] else "")
        + "   socket errors: " + (", ".join(f"{k} {v}" for k, v in loaded["socket_errors"].items() if v) or "0"),
    ]  # fmt: skip
    if "payments" in result and "end_to_end" in result["payments"]:
        lines += payments_report.summary_lines(result, mark)
    if "settle" in result:
        s = result["settle"]
        lines.append(
            f"  settle      {s['in_flight_at_end_of_load']} sagas in flight at the end, {s['in_flight']} after "
            f"{s['seconds']} s  {mark(s['settled'])}"
        )
    if "effects" in result:
        e = result["effects"]
        lines.append(
            f"  effects     {e['transfers']:,} transfers ({e['cross_shard']:,} cross-shard) for {e['fresh_201']:,} "
            f"fresh 201s (+{e['unknown_outcome']:,} requests of unknown outcome); "
            f"{e['duplicated_keys']} keys moved money twice  {mark(e['ok'])}"
        )
    if "audit" in result:
        a = result["audit"]
        detail = "ok" if a["ok"] else f"violations {a['violation_counts']}"
        lines.append(f"  audit       shardpay audit: {detail}  {mark(a['ok'])}")
    if "money" in result:
        m = result["money"]
        lines.append(
            f"  money       seeded {m['seeded']:,} = wallets {m['wallets']:,} + in flight {m['in_flight']:,} "
            f"(difference {m['difference']:,})  {mark(m['ok'])}"
        )
    if "postgres" in result:
        settings = result["postgres"]
        shown = "  ".join(f"{k} {settings.get(k)}" for k in EXPECTED_SETTINGS)
        lines.append(f"  postgres    {shown}  {mark(result['checks'].get('postgres_settings', False))}")
    pg = result.get("pgbench")
    if pg:
        if pg.get("tps"):
            lines.append(
                f"  pgbench     {pg['tps']:,.0f} tps ({pg['clients']} clients, {pg['seconds']} s, p99 "
                f"{pg['latency_ms']['p99']:.1f} ms)   ratio shardpay 2xx/s ÷ pgbench tps = {result['ratio']:.3f}"
                + (f"  [{pg['note']}]" if pg.get("note") else "")
            )
        else:
            lines.append(f"  pgbench     failed: {pg.get('error')}")
    cpu = loaded["cpu"]
    lines.append(
        f"  CPU         {cpu['cpus']} cores over {cpu['wall_s']} s of load"
        + (" and its drain" if loaded.get("drain") else "")
        + f": {cpu['busy_pct']}% busy "
        f"(share = % of all cores; cores = CPU-seconds per second)"
    )
    lines.append(f"    {'process':<42} {'pids':>4} {'cpu s':>8} {'cores':>6} {'share':>7}")
    for row in cpu["processes"]:
        lines.append(
            f"    {row['process']:<42} {row['pids']:>4} {row['cpu_s']:>8.2f} {row['cores']:>6.2f} "
            f"{row['share_pct']:>6.1f}%"
        )
    if loaded.get("wrk_cpu_per_request_us"):
        lines.append(
            f"  wrk         {loaded['wrk_cpu_per_request_us']:.1f} µs CPU per request at this rate "
            f"({cpu['wrk_cpu_s']:.2f} CPU s; the generator's own ceiling: --selftest)"
        )
    if "payments" in result and "cpu_per_payment" in result["payments"]:
        lines += payments_report.cpu_lines(result)
    lines += capacity.lines(result)
    lines += _memory_lines(cpu.get("memory", []), result["checks"].get("gateway_memory_flat"))
    lines.append(f"  files       {result['files']['json']}  {result['files']['png']}")
    failed = [name for name, ok in result["checks"].items() if not ok]
    lines.append(f"RESULT {mark(result['pass'])}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    return "\n".join(lines)


def matrix_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| scenario | shards | connections | workers | req/s | 2xx/s | p50 ms | p99 ms | p99.9 ms | non-2xx | "
        "pgbench tps | ratio | checks |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "error" in r:
            out.append(
                f"| {r['scenario']} | {r['shards']} | {r['connections']} | | | | | | | | | | error: {r['error']} |"
            )
            continue
        cfg, loaded = r["config"], r["load"]
        lat = loaded["latency_ms"]
        non2xx = loaded["requests"] - loaded["ok"] + sum(loaded["socket_errors"].values())
        pg = (r.get("pgbench") or {}).get("tps")
        ratio = f"{r['ratio']:.3f}" if r.get("ratio") is not None else "-"
        out.append(
            f"| {cfg['scenario']} | {cfg['shards']} | {cfg['connections']} | {cfg['workers']} | {loaded['rps']:,.0f} | "
            f"{loaded['ok_per_s']:,.0f} | {lat['p50']:.1f} | {lat['p99']:.1f} | {lat['p99.9']:.1f} | {non2xx:,} | "
            f"{f'{pg:,.0f}' if pg else '-'} | {ratio} | "
            f"{mark(r['pass'])} |"
        )
    return "\n".join(out)


def _memory_lines(rows: list[dict[str, Any]], checked: bool | None) -> list[str]:
    if not rows:
        return []
    verdict = "not checked (runs under 60 s)" if checked is None else mark(checked)
    lines = [f"  memory      resident, from {100 * load.MEMORY_SETTLED:.0f}% into the load to its end: {verdict}"]
    for row in rows:
        lines.append(
            f"    {row['process']:<42} {row['settled_mb']:>7.1f} MB -> {row['end_mb']:>7.1f} MB "
            f"({row['drift_pct']:+.1f}%, peak {row['peak_mb']:.1f} MB)"
        )
    return lines
