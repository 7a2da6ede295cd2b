"""The audit passes a sound ledger, in flight or at rest, and names the rule for each kind of corruption.

Corruption needs databases of its own: everything here runs on a scratch set (``shardpay_test_audit_*``,
two shards) that this module creates and drops, so the session databases stay clean for everyone else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest_asyncio

from shardpay import ids
from shardpay.config import Settings
from shardpay.services import saga, transfers, wallets
from shardpay.services.outcome import Caller
from shards import ledger, queries
from shards.audit import CAP, audit
from shards.migrate import migrate
from shards.pools import Shards, open_shards
from tests.conftest import TEST_PREFIX, drop_databases, key, settled, stack_env

SCRATCH_PREFIX = f"{TEST_PREFIX}_audit"
MERCHANT = "mer_0000" + "0" * 20
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/shardpay_test_nowhere"


@dataclass(frozen=True)
class Scratch:
    env: dict[str, str]
    settings: Settings
    shards: Shards


@pytest_asyncio.fixture(scope="module")
async def scratch() -> AsyncIterator[Scratch]:
    env = stack_env(SHARDPAY_DB_PREFIX=SCRATCH_PREFIX, SHARDPAY_SHARDS="2")
    settings = Settings.from_env(env)
    await drop_databases(settings)
    await migrate(settings)
    async with open_shards(settings, pool_max=4) as shards:
        yield Scratch(env, settings, shards)
    await drop_databases(settings)


def caller() -> Caller:
    idem = key()
    return Caller(MERCHANT, f"req_{idem}", idem, f"fp_{idem}")


async def wallet(shards: Shards, shard: int, funds: int = 0) -> str:
    """A USD wallet on ``shard`` (the slot follows the idempotency key: try keys until one lands there)."""
    while True:
        outcome = await wallets.create(shards, caller(), wallets.CreateWallet("USD", None, None))
        wallet_id: str = orjson.loads(outcome.body)["id"]
        if shard_of(shards, wallet_id, "wal") == shard:
            break
    if funds:
        await wallets.credit(shards, wallet_id, funds, "scratch funding")
    return wallet_id


def shard_of(shards: Shards, object_id: str, prefix: str) -> int:
    slot = ids.parse(object_id, prefix)
    assert slot is not None
    return shards.index_of(slot)


async def transfer(shards: Shards, source: str, destination: str, amount: int) -> dict[str, Any]:
    cmd = transfers.CreateTransfer(source, destination, amount, "USD", None)
    outcome = await transfers.create(shards, caller(), cmd, 1.0)
    assert outcome.status == 201, outcome.body
    created: dict[str, Any] = orjson.loads(outcome.body)
    await settled(shards, created["id"])  # a cross-shard transfer's leg 3 follows its answer
    return created


async def leg_one(shards: Shards, source: str, destination: str, amount: int) -> str:
    """Leg 1 of a cross-shard transfer and nothing after it."""
    slot = ids.parse(source, "wal")
    assert slot is not None
    transfer_id, idem = ids.new_id("tr", slot), key()
    request = ledger.OpenTransfer(
        MERCHANT, idem, f"fp_{idem}", transfer_id, source, destination, amount, "USD", None, f"req_{idem}", 0, True,
        "{}", "{}", ids.new_id("evt", slot), "{}",
    )  # fmt: skip
    assert (await ledger.open_transfer(shards.pool(shards.index_of(slot)), request)).outcome == "applied"
    return transfer_id


async def broken_rules(settings: Settings) -> set[str]:
    report = await audit(settings)
    assert report["ok"] is not bool(report["violation_counts"])
    return set(report["violation_counts"])


async def cli_audit(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shardpay", "audit", env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, orjson.loads(out)


async def test_a_sound_ledger_passes_and_its_totals_add_up(scratch: Scratch) -> None:
    source, neighbour = await wallet(scratch.shards, 0, funds=1_000), await wallet(scratch.shards, 0)
    remote = await wallet(scratch.shards, 1)
    assert (await transfer(scratch.shards, source, neighbour, 100))["status"] == "succeeded"
    assert (await transfer(scratch.shards, source, remote, 200))["status"] == "succeeded"
    report = await audit(scratch.settings)
    assert report["ok"] and report["violations"] == [] and report["shards"] == 2, report
    assert report["totals"]["USD"] == {"total": 1_000, "wallets": 1_000, "in_flight": 0, "transit": 0,
                                       "interchange": 0, "credited_in_flight": 0}  # fmt: skip
    # Funding, the same-shard transfer, and the saga's three legs: five transactions of two entries.
    checked = report["checked"]
    assert (checked["ledger_txns"], checked["entries"], checked["cross_shard_transfers"]) == (5, 10, 1)
    returncode, printed = await cli_audit(scratch.env)
    assert (returncode, printed["ok"]) == (0, True)


async def test_transfers_in_flight_are_accounted_for_not_flagged(scratch: Scratch) -> None:
    source, destination = await wallet(scratch.shards, 1, funds=300), await wallet(scratch.shards, 0)
    before = (await audit(scratch.settings))["totals"]["USD"]
    transfer_id = await leg_one(scratch.shards, source, destination, 300)
    report = await audit(scratch.settings)
    assert report["ok"], report
    assert report["totals"]["USD"]["in_flight"] == report["totals"]["USD"]["transit"] == 300
    assert report["totals"]["USD"]["wallets"] == before["wallets"] - 300

    row = await queries.transfer(scratch.shards.pool(1), transfer_id)
    assert row is not None
    inbound = await ledger.credit_inbound(
        scratch.shards.pool(0), ledger.Inbound(transfer_id, MERCHANT, destination, 300, "USD")
    )
    report = await audit(scratch.settings)
    assert inbound == "applied" and report["ok"], report
    assert (report["totals"]["USD"]["in_flight"], report["totals"]["USD"]["credited_in_flight"]) == (0, 300)

    assert await saga.finish(scratch.shards, row, inbound) == "succeeded"
    report = await audit(scratch.settings)
    assert report["ok"] and report["totals"]["USD"] == before, report


async def test_balance_drift_outside_the_ledger_is_caught(scratch: Scratch) -> None:
    victim = await wallet(scratch.shards, 0, funds=50)
    pool = scratch.shards.pool(0)
    await pool.execute("UPDATE accounts SET available = available + 1 WHERE id = $1", victim)
    report = await audit(scratch.settings)
    assert set(report["violation_counts"]) == {"wallet_balance", "conservation"}
    drift = [v for v in report["violations"] if v["rule"] == "wallet_balance"]
    assert drift == [{"rule": "wallet_balance", "shard": 0, "detail": {"id": victim, "available": 51, "entries": 50}}]
    returncode, printed = await cli_audit(scratch.env)
    assert (returncode, printed["ok"]) == (1, False)
    await pool.execute("UPDATE accounts SET available = available - 1 WHERE id = $1", victim)
    assert await broken_rules(scratch.settings) == set()


async def without_immutability(pool: asyncpg.Pool, sql: str, *args: Any) -> None:
    """Change ledger_entries as only a scratch database may: with its guard off for one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_change")
        await conn.execute(sql, *args)
        await conn.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_no_change")


async def test_unbalanced_transactions_are_all_counted_and_the_first_hundred_listed(scratch: Scratch) -> None:
    victim = await wallet(scratch.shards, 1)
    pool = scratch.shards.pool(1)
    await pool.execute(
        "INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) "
        "SELECT nextval('ledger_txn_seq'), $1, 1, 'USD', 'forged', 'forged' FROM generate_series(1, $2)",
        victim, CAP + 50,
    )  # fmt: skip
    report = await audit(scratch.settings)
    counts = report["violation_counts"]
    assert counts == {"double_entry": CAP + 50, "wallet_balance": 1}, counts
    assert len([v for v in report["violations"] if v["rule"] == "double_entry"]) == CAP
    await without_immutability(pool, "DELETE FROM ledger_entries WHERE kind = 'forged'")
    assert await broken_rules(scratch.settings) == set()


async def test_an_entry_in_another_currency_than_its_account_is_caught(scratch: Scratch) -> None:
    victim = await wallet(scratch.shards, 0)
    pool = scratch.shards.pool(0)
    await pool.execute(
        "WITH t AS (SELECT nextval('ledger_txn_seq') AS id) "
        "INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) "
        "SELECT t.id, a, x, 'EUR', 'forged', 'forged' FROM t, (VALUES ($1, 5), ('sys_funding_EUR', -5)) v(a, x)",
        victim,
    )
    await pool.execute("UPDATE accounts SET available = 5 WHERE id = $1", victim)
    assert await broken_rules(scratch.settings) == {"entry_currency", "conservation"}
    await without_immutability(pool, "DELETE FROM ledger_entries WHERE kind = 'forged'")
    await pool.execute("UPDATE accounts SET available = 0 WHERE id = $1", victim)
    assert await broken_rules(scratch.settings) == set()


async def test_an_entry_for_an_account_that_does_not_exist_is_caught(scratch: Scratch) -> None:
    pool = scratch.shards.pool(1)
    await pool.execute(
        "WITH t AS (SELECT nextval('ledger_txn_seq') AS id) "
        "INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) "
        "SELECT t.id, a, x, 'USD', 'forged', 'forged' "
        "FROM t, (VALUES ('wal_nowhere', 5), ('sys_funding_USD', -5)) v(a, x)"
    )
    report = await audit(scratch.settings)
    assert "entry_account" in report["violation_counts"], report["violation_counts"]
    found = [v["detail"] for v in report["violations"] if v["rule"] == "entry_account"]
    assert found == [{"account_id": "wal_nowhere", "currency": "USD", "entries": 1}]
    await without_immutability(pool, "DELETE FROM ledger_entries WHERE kind = 'forged'")
    assert await broken_rules(scratch.settings) == set()


async def test_a_disabled_immutability_trigger_is_caught(scratch: Scratch) -> None:
    pool = scratch.shards.pool(1)
    await pool.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_change")
    try:
        report = await audit(scratch.settings)
    finally:
        await pool.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_no_change")
    assert [(v["rule"], v["shard"]) for v in report["violations"]] == [("immutable", 1), ("immutable", 1)]
    assert {v["detail"].split()[4] for v in report["violations"]} == {"UPDATE", "DELETE"}
    assert await broken_rules(scratch.settings) == set()


async def test_a_misnamed_system_account_is_caught(scratch: Scratch) -> None:
    pool = scratch.shards.pool(0)
    await pool.execute("INSERT INTO accounts (id, kind, currency) VALUES ('sys_transit_usd', 'transit', 'USD')")
    assert await broken_rules(scratch.settings) == {"system_balance"}
    await pool.execute("DELETE FROM accounts WHERE id = 'sys_transit_usd'")
    assert await broken_rules(scratch.settings) == set()


INBOUND = "INSERT INTO inbound_transfers VALUES ($1, $2, $3, $4, 'USD', 'applied', now() - interval '1 hour')"
DROP_INBOUND = "DELETE FROM inbound_transfers WHERE transfer_id = $1"
INBOUND_STATUS = "UPDATE inbound_transfers SET status = $2 WHERE transfer_id = $1"
TRANSFER_STATE = "UPDATE transfers SET saga_state = $2, status = $3 WHERE id = $1"


@dataclass(frozen=True)
class Corruption:
    name: str
    shard: int
    corrupt: tuple[str, tuple[Any, ...]]
    repair: tuple[str, tuple[Any, ...]]
    rules: set[str]


async def test_each_broken_cross_shard_rule_is_named(scratch: Scratch) -> None:
    source, destination = await wallet(scratch.shards, 0, funds=80), await wallet(scratch.shards, 1)
    done = (await transfer(scratch.shards, source, destination, 80))["id"]
    orphan = ids.new_id("tr", scratch.shards.slots.slots_of(0)[0])
    cases = [
        Corruption("credit lost", 1, (INBOUND_STATUS, (done, "aborted")), (INBOUND_STATUS, (done, "applied")),
                   {"saga_inbound", "interchange_balance"}),
        Corruption("credited twice", 0, (INBOUND, (done, MERCHANT, destination, 80)), (DROP_INBOUND, (done,)),
                   {"inbound_duplicate", "interchange_balance"}),
        Corruption("credit from nowhere", 1, (INBOUND, (orphan, MERCHANT, destination, 9)), (DROP_INBOUND, (orphan,)),
                   {"inbound_orphan", "interchange_balance"}),
        Corruption("status lies", 0, (TRANSFER_STATE, (done, "done", "failed")),
                   (TRANSFER_STATE, (done, "done", "succeeded")), {"saga_status"}),
        Corruption("settled but marked in flight", 0, (TRANSFER_STATE, (done, "debited", "processing")),
                   (TRANSFER_STATE, (done, "done", "succeeded")),
                   {"transit_balance", "interchange_balance", "interchange_total"}),
    ]  # fmt: skip
    for case in cases:
        pool = scratch.shards.pool(case.shard)
        await pool.execute(case.corrupt[0], *case.corrupt[1])
        try:
            assert await broken_rules(scratch.settings) == case.rules, case.name
        finally:
            await pool.execute(case.repair[0], *case.repair[1])
        assert await broken_rules(scratch.settings) == set(), case.name


async def test_an_unreachable_shard_fails_the_audit(scratch: Scratch) -> None:
    settings = dataclasses.replace(scratch.settings, shard_dsns=(scratch.settings.shard_dsns[0], UNREACHABLE))
    report = await audit(settings)
    assert (report["ok"], report["violation_counts"]) == (False, {"shard_unavailable": 1})
