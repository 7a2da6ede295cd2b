"""One drill: its own merchant and wallets, its own bounded load, one fault, the wait for recovery, the checks,
and a JSON report; ``run_all`` runs every drill the topology has the parts for, one after the other."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx

from shardpay import ids
from shardpay.config import Settings
from shardpay.drills import checks, faults
from shardpay.drills.faults import Context, Fault
from shardpay.drills.load import Load, Wallet
from shardpay.drills.measure import Window, summarize
from shardpay.ha.layout import Topology
from shardpay.ha.runner import stack_env
from shardpay.services.idempotent import home_slot
from shards.pools import Shards, open_shards

WALLETS_PER_SHARD = 6
FUNDS = 1_000_000  # minor units per wallet: transfers of 1..100 never run one dry in a drill
WARMUP = 3.0  # seconds of load before the fault
CLEAN = 3.0  # seconds without a failed attempt that count as "service is whole again"
LIMIT = 120.0  # seconds after the fault before a drill gives up waiting for recovery
RTO_TARGET = 15.0  # seconds: writes to a shard whose primary was killed


def settings_for(topology: Topology) -> Settings:
    return Settings.from_env(stack_env(topology))


async def _wallets(http: httpx.AsyncClient, shards: Shards, count: int) -> list[Wallet]:
    """``count`` wallets on every shard, created through the API (each lands on its key's home shard)."""
    made: dict[int, list[str]] = {n: [] for n in range(len(shards.pools))}
    for attempt in range(count * len(made) * 30):
        if all(len(found) >= count for found in made.values()):
            break
        answer = await http.post("/v1/wallets", json={"currency": "USD"}, headers={"Idempotency-Key": f"w-{attempt}"})
        answer.raise_for_status()
        wallet_id = answer.json()["id"]
        slot = ids.parse(wallet_id, "wal")
        assert slot is not None
        made[shards.index_of(slot)].append(wallet_id)
    return [Wallet(w, shard) for shard, found in made.items() for w in found[:count]]


async def _setup(topology: Topology, shards: Shards) -> tuple[str, str, list[Wallet]]:
    from shardpay.services import wallets
    from shards.control import create_merchant

    created = await create_merchant(shards.control, f"drill-{secrets.token_hex(4)}", None, 1_000_000, 1_000_000)
    headers = {"Authorization": f"Bearer {created.api_key}"}
    async with httpx.AsyncClient(base_url=topology.gateway_url, headers=headers, timeout=15) as http:
        found = await _wallets(http, shards, WALLETS_PER_SHARD)
    for wallet in found:
        await wallets.credit(shards, wallet.id, FUNDS, "drill funding")
    return created.merchant.id, created.api_key, found


async def _until(check: Any, ctx: Context, limit: float) -> float | None:
    """Seconds until ``check(ctx)`` is true (polled), or None if it was not within ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if await check(ctx):
                return round(time.monotonic() - started, 2)
        except (OSError, ConnectionError, httpx.HTTPError):
            pass
        await asyncio.sleep(0.5)
    return None


async def _clean_stretch(load: Load, since: float, limit: float) -> None:
    """Until the load has gone ``CLEAN`` seconds without a failed attempt (or ``limit`` has passed)."""
    from shardpay.drills.measure import failed

    while load.now() - since < limit:
        recent = [a for r in load.requests[-500:] for a in r.attempts if a.answered > load.now() - CLEAN]
        if load.now() - since > CLEAN and recent and not any(failed(a) for a in recent):
            return
        await asyncio.sleep(0.5)


async def run_drill(topology: Topology, fault: Fault, shard: int = 0) -> dict[str, Any]:
    """The drill's report; ``ok`` is False if any check failed."""
    settings = settings_for(topology)
    ctx = Context(topology, shard)
    async with open_shards(settings, pool_max=4) as shards:
        merchant, api_key, wallets = await _setup(topology, shards)
        load = Load(topology.gateway_url, api_key, wallets, lambda key: shards.index_of(home_slot(merchant, key)))
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        await asyncio.sleep(WARMUP)
        fault_at = load.now()
        try:
            detail = await fault.inject(ctx)
            restored = await _until(lambda c: fault.restored(c, detail), ctx, LIMIT)
            await _clean_stretch(load, fault_at, LIMIT)
        finally:
            stop.set()
            await running
        seen = summarize(load.requests, Window(fault_at, shard if fault.shard_fault else None))
        verdict = await _checks(settings, shards, merchant, load, [w.id for w in wallets])
    return _report(fault, detail, restored, seen, verdict)


async def _checks(
    settings: Settings, shards: Shards, merchant: str, load: Load, wallet_ids: list[str]
) -> dict[str, Any]:
    settled = await checks.settle(shards, merchant, within=90.0)
    return {
        "settled": settled,
        "lost": await checks.lost(shards, load.requests),
        "doubled": await checks.doubled(shards, merchant),
        "money": await checks.money(shards, wallet_ids, len(wallet_ids) * FUNDS),
        "events": await checks.events(shards, merchant, within=90.0),
        "audit": await checks.audit(settings),
    }


def _report(fault: Fault, detail: dict[str, Any], restored: float | None, seen: dict[str, Any],
            verdict: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    passed = {
        "no_acknowledged_transfer_lost": not verdict["lost"],
        "no_key_with_two_effects": not verdict["doubled"],
        "money_conserved": verdict["money"]["ok"],
        "audit_clean": verdict["audit"]["ok"],
        "events_delivered": verdict["events"]["ok"],
        "no_500": seen["status_500"] == 0,
        "nobody_gave_up": seen["gave_up"] == 0 and not seen["unexpected_final"],
        "recovered": restored is not None,
    }
    if fault.shard_fault:
        passed["no_error_on_other_shards"] = seen["errors_on_other_shards"] == 0
    if fault.name == "shard-primary-kill":
        passed[f"rto_within_{RTO_TARGET:g}s"] = seen["rto_s"] <= RTO_TARGET
    if fault.name == "etcd-kill":
        passed["primaries_kept"] = bool(detail["primaries_kept"])
    if fault.name == "gateway-kill":
        passed["only_retryable_errors"] = set(seen["errors_by_status"]) <= {"503", "409", "429"}
        passed["new_requests_served"] = set(seen["first_try_errors"]) <= {"503"}
    return {
        "drill": fault.name, "fault": fault.summary, "expect": fault.expect, "ok": all(passed.values()),
        "injected": detail, "restored_after_s": restored, **seen, "checks": passed, "details": verdict,
    }  # fmt: skip


def applicable(topology: Topology) -> list[Fault]:
    """The drills this topology has the parts for (a test's small topology has no Redis or RabbitMQ of its own)."""
    has = {"redis": topology.redis, "rabbitmq": topology.rabbitmq, "": True}
    return [fault for fault in faults.FAULTS.values() if has[fault.needs]]


async def run_all(topology: Topology, shard: int = 0) -> list[dict[str, Any]]:
    """Every applicable drill in turn, each starting once the topology is whole again after the last."""
    reports = []
    for fault in applicable(topology):
        await _until(faults.whole, Context(topology, shard), LIMIT)
        reports.append(await run_drill(topology, fault, shard))
    return reports


def table(reports: list[dict[str, Any]]) -> str:
    """The drills as the README's table."""
    lines = [
        "| drill | first error s | RTO s | errors during the outage | lost | doubled | money | audit | checks |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- | --- | --- |",
    ]
    for r in reports:
        errors = ", ".join(f"{n} x {s}" for s, n in sorted(r["errors_by_status"].items())) or "none"
        first = "-" if r["first_error_s"] is None else f"{r['first_error_s']:.2f}"
        money = "conserved" if r["checks"]["money_conserved"] else "WRONG"
        audit = "clean" if r["checks"]["audit_clean"] else "VIOLATIONS"
        failed = [name for name, ok in r["checks"].items() if not ok]
        verdict = "PASS" if r["ok"] else "FAIL: " + ", ".join(failed)
        lines.append(f"| {r['drill']} | {first} | {r['rto_s']:.2f} | {errors} | {len(r['details']['lost'])} | "
                     f"{len(r['details']['doubled'])} | {money} | {audit} | {verdict} |")  # fmt: skip
    return "\n".join(lines)
