"""The payments scenario of loadtest/bench.py (``--scenario payments``): pay-ins end to end, through the bench's
own PSP simulator and executor.

Before the load: the simulator's faults are set through ``PUT /sim/faults`` (5 ms latency on every call, no
other fault), and a handful of ``pm_`` tokens are got as a customer gets them: a checkout session through the
gateway, the hosted page's form fetched and posted with a test card, the token read from the redirect. The load
is wrk with ``loadtest/wrk/payments.lua``. After it: wait (bounded) until every order is final, read the
timestamps out of the shards and the simulator's database (``bench_payments_report`` makes the figures), and
check that every order succeeded, each wallet holds its seed plus its orders, the simulator charged each order
once, and each key stored one payment.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx

from loadtest import bench_payments_report as figures
from loadtest.bench_report import fresh_and_unknown
from loadtest.bench_stack import CURRENCY, BenchError, Seeded, say
from shardpay.config import Settings

CARD = "4242424242424242"  # succeeds, every time
METHODS = 8  # saved cards the load charges in turn (a pm_ can be charged any number of times)
FAULTS = {"latency_ms": 5}  # and nothing else: the simulator's database is fresh, every other knob at its default
MAX_SETTLE = 3600.0  # seconds: the longest any backlog is waited for


def prepare(gateway: str, sim: str, api_key: str, work: Path) -> tuple[Path, dict[str, Any]]:
    """Set the simulator's faults and get ``METHODS`` pm_ tokens through the hosted page; the tokens' file for
    payments.lua, and what was set."""
    with httpx.Client(timeout=30) as http:
        answer = http.put(f"{sim}/sim/faults", json=FAULTS)
        if answer.status_code != 200 or any(answer.json().get(k) != v for k, v in FAULTS.items()):
            raise BenchError(f"PUT {sim}/sim/faults {FAULTS} answered {answer.status_code}: {answer.text[:300]}")
        methods = [_payment_method(http, gateway, sim, api_key) for _ in range(METHODS)]
    path = work / "payment-methods.txt"
    path.write_text("".join(f"{method}\n" for method in methods))
    return path, {"faults": answer.json(), "payment_methods": len(methods), "card": f"…{CARD[-4:]}"}


def setup(
    result: dict[str, Any], gateway: str, settings: Settings, seeded: Seeded, work: Path, stall: float
) -> tuple[tuple[str, ...], Callable[[], dict[str, Any]]]:
    """``prepare``, then payments.lua's extra argument (the tokens' file) and the harness's drain: ``settle``."""
    methods, result["payments"] = prepare(gateway, settings.psp_url, seeded.api_key, work)
    say(f"simulator faults {FAULTS}; {METHODS} pm_ tokens from the hosted page")

    def drain() -> dict[str, Any]:
        return asyncio.run(settle(settings, seeded.merchant, stall))

    return (str(methods),), drain


def _payment_method(http: httpx.Client, gateway: str, sim: str, api_key: str) -> str:
    """A checkout session, then the customer's two steps on the hosted page; the pm_ from the redirect."""
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"bench-checkout-{secrets.token_hex(8)}"}
    body = {"amount": 1000, "currency": CURRENCY, "return_url": "https://shop.example/done"}
    session = http.post(f"{gateway}/v1/checkout_sessions", json=body, headers=headers)
    if session.status_code != 201:
        raise BenchError(f"POST /v1/checkout_sessions answered {session.status_code}: {session.text[:300]}")
    url = str(session.json()["redirect_url"])
    if not url.startswith(f"{sim}/"):  # the gateway must be talking to the bench's own simulator
        raise BenchError(f"the hosted page {url!r} is not on the bench's simulator {sim}")
    form = http.get(url)
    paid = http.post(url, data={"card_number": CARD})
    if form.status_code != 200 or paid.status_code != 303:
        raise BenchError(f"the hosted page answered {form.status_code} then {paid.status_code}: {paid.text[:300]}")
    method = parse_qs(urlsplit(paid.headers["location"]).query).get("payment_method", [""])[0]
    if not method.startswith("pm_"):
        raise BenchError(f"the hosted page sent the customer to {paid.headers['location']!r}: no pm_ token")
    return method


# ------------------------------------------------------------------------------------------------ after the load

_PROCESSING = """
SELECT (SELECT count(*) FROM payment_orders WHERE merchant_id = $1 AND status = 'processing') AS orders,
       (SELECT count(*) FROM payments WHERE merchant_id = $1 AND (status = 'processing' OR NOT materialized))
           AS payments
"""


async def settle(settings: Settings, merchant: str, stall: float) -> dict[str, Any]:
    """Wait until every order and every payment of the merchant is final, giving up once ``stall`` seconds pass
    with nothing becoming final (or after an hour): a backlog the executor works through takes as long as it
    takes, a stuck one does not hold the run."""
    started = last_progress = time.monotonic()
    async with AsyncExitStack() as stack:
        conns: list[asyncpg.Connection] = []
        for dsn in settings.shard_dsns:
            conns.append(await asyncpg.connect(dsn))
            stack.push_async_callback(conns[-1].close)

        async def open_now() -> tuple[int, int]:
            rows = [await conn.fetchrow(_PROCESSING, merchant) for conn in conns]
            return sum(r["orders"] for r in rows if r), sum(r["payments"] for r in rows if r)

        first = now = await open_now()
        while any(now) and time.monotonic() - last_progress < stall and time.monotonic() - started < MAX_SETTLE:
            await asyncio.sleep(0.25)
            before, now = now, await open_now()
            if sum(now) < sum(before):
                last_progress = time.monotonic()
    return {
        "processing_at_end_of_load": first[0], "payments_open_at_end_of_load": first[1], "processing": now[0],
        "payments_open": now[1], "seconds": round(time.monotonic() - started, 2), "settled": not any(now),
    }  # fmt: skip


_PAYMENTS = """
SELECT id, extract(epoch FROM created_at)::float8 AS created, status, idempotency_key
FROM payments WHERE merchant_id = $1
"""
_ORDERS = """
SELECT id, payment_id, status, amount, extract(epoch FROM created_at)::float8 AS placed,
       extract(epoch FROM updated_at)::float8 AS updated
FROM payment_orders WHERE merchant_id = $1
"""
# Each wallet against its seed plus its succeeded orders (an order lives on its wallet's shard), and pending 0.
_BALANCES = """
SELECT count(*) AS wallets, coalesce(sum(a.available), 0) AS available,
       count(*) FILTER (WHERE a.available <> $2 + coalesce(o.total, 0) OR a.pending <> 0) AS wrong,
       (array_agg(a.id) FILTER (WHERE a.available <> $2 + coalesce(o.total, 0) OR a.pending <> 0))[1:5] AS examples
FROM accounts a
LEFT JOIN (SELECT destination, sum(amount) AS total FROM payment_orders
           WHERE merchant_id = $1 AND status = 'succeeded' GROUP BY 1) o ON o.destination = a.id
WHERE a.kind = 'wallet' AND a.merchant_id = $1
"""
_SYSTEM = """
SELECT a.kind, coalesce(sum(e.amount), 0) AS total FROM accounts a JOIN ledger_entries e ON e.account_id = a.id
WHERE a.kind IN ('funding', 'psp_clearing') AND a.currency = $1 GROUP BY 1
"""


async def _shard(dsn: str, merchant: str, balance: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "payments": await conn.fetch(_PAYMENTS, merchant), "orders": await conn.fetch(_ORDERS, merchant),
            "balances": await conn.fetchrow(_BALANCES, merchant, balance),
            "system": {r["kind"]: int(r["total"]) for r in await conn.fetch(_SYSTEM, CURRENCY)},
        }  # fmt: skip
    finally:
        await conn.close()


async def _simulator(dsn: str) -> tuple[dict[str, float], dict[str, int]]:
    """When the simulator recorded each charge (by shardpay's reference, the order id), and its webhooks' states."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT reference, extract(epoch FROM created)::float8 AS at FROM movements WHERE type = 'charge'"
        )
        states = await conn.fetch("SELECT state, count(*) AS n FROM events GROUP BY 1 ORDER BY 1")
    finally:
        await conn.close()
    return {r["reference"]: r["at"] for r in rows}, {r["state"]: r["n"] for r in states}


def _charges(sim: str, order_ids: set[str]) -> dict[str, Any]:
    """The simulator's own truth (GET /sim/records?type=charge): one succeeded charge per order, no key twice."""
    with httpx.Client(timeout=120) as http:
        answer = http.get(f"{sim}/sim/records", params={"type": "charge"})
    if answer.status_code != 200:
        raise BenchError(f"GET /sim/records answered {answer.status_code}: {answer.text[:300]}")
    records = answer.json()["data"]
    keys = Counter(r["idempotency_key"] for r in records)
    twice = sum(1 for n in keys.values() if n > 1)
    missing = len(order_ids - set(keys))
    strangers = len(set(keys) - order_ids)
    not_succeeded = sum(1 for r in records if r["status"] != "succeeded")
    return {
        "ok": twice == missing == strangers == not_succeeded == 0 and len(records) == len(order_ids),
        "charges": len(records), "orders": len(order_ids), "keys_twice": twice, "missing": missing,
        "not_ours": strangers, "not_succeeded": not_succeeded, "calls": sum(r["calls"] for r in records),
    }  # fmt: skip


def after(result: dict[str, Any], settings: Settings, seeded: Seeded) -> None:
    """Everything after the load and its drain (``settle``, run by the harness) but the audit: measure and check,
    into ``result``."""
    checks = result["checks"]
    pay = result["payments"]
    pay["settle"] = result["load"]["drain"]
    checks["all_final"] = pay["settle"]["settled"]
    shards = asyncio.run(_read_shards(settings, seeded))
    charged, pay["webhooks"] = asyncio.run(_simulator(settings.psp_dsn))
    created = {r["id"]: r["created"] for s in shards for r in s["payments"]}
    orders = [
        figures.Order(r["id"], r["payment_id"], r["status"], r["placed"],
                      None if r["status"] == "processing" else r["updated"])
        for s in shards for r in s["orders"]
    ]  # fmt: skip
    pay["end_to_end"] = figures.end_to_end(created, orders, charged, tuple(result["load"]["window"]))
    statuses = {
        "payments": dict(Counter(r["status"] for s in shards for r in s["payments"])),
        "orders": dict(Counter(o.status for o in orders)),
    }
    pay["statuses"] = statuses
    checks["all_succeeded"] = set(statuses["payments"]) == set(statuses["orders"]) == {"succeeded"}
    pay["balances"] = _balances(shards, seeded)
    checks["balances"] = pay["balances"]["ok"]
    pay["charges"] = _charges(settings.psp_url, {o.id for o in orders})
    checks["one_charge_per_order"] = pay["charges"]["ok"]
    pay["effects"] = _effects(result["load"], shards)
    checks["one_payment_per_key"] = pay["effects"]["ok"]
    pay["cpu_per_payment"] = figures.cpu_per_payment(result["load"]["cpu"], pay["end_to_end"]["completed"])
    warm = (result["load"]["warmup"] or {}).get("statuses", {})
    seen = Counter(result["load"]["statuses"]) + Counter(warm)
    checks["no_5xx"] = not any(code.startswith("5") for code, n in seen.items() if n)
    checks["no_422"] = seen.get("422", 0) == 0


async def _read_shards(settings: Settings, seeded: Seeded) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_shard(dsn, seeded.merchant, seeded.balance) for dsn in settings.shard_dsns)))


def _balances(shards: list[dict[str, Any]], seeded: Seeded) -> dict[str, Any]:
    """Each wallet = its seed + its succeeded orders, pending 0; in all, the wallets hold the seed plus what the
    orders paid in, which is what the PSP clearing account gave (and the funding account what was seeded)."""
    paid_in = sum(int(r["amount"]) for s in shards for r in s["orders"] if r["status"] == "succeeded")
    clearing = sum(s["system"].get("psp_clearing", 0) for s in shards)
    available = sum(int(s["balances"]["available"]) for s in shards)
    wrong = sum(s["balances"]["wrong"] for s in shards)
    funding = sum(s["system"].get("funding", 0) for s in shards)
    ok = wrong == 0 and available == seeded.total + paid_in == seeded.total - clearing and -funding == seeded.total
    return {
        "ok": ok, "wallets": sum(s["balances"]["wallets"] for s in shards), "wrong": wrong,
        "examples": [e for s in shards for e in (s["balances"]["examples"] or [])][:5], "available": available,
        "seeded": seeded.total, "paid_in": paid_in, "psp_clearing": clearing, "funding": funding,
    }  # fmt: skip


def _effects(loaded: dict[str, Any], shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Each key stored one payment (a key's payment lives on the key's home shard), and every fresh 201 is one."""
    rows = sum(len(s["payments"]) for s in shards)
    keys = sum(len({r["idempotency_key"] for r in s["payments"]}) for s in shards)
    fresh, unknown = fresh_and_unknown(loaded)
    return {
        "ok": rows == keys and fresh <= rows <= fresh + unknown, "payments": rows, "duplicated_keys": rows - keys,
        "fresh_201": fresh, "unknown_outcome": unknown,
    }  # fmt: skip
