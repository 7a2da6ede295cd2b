"""Rules about one shard, each read from one REPEATABLE READ snapshot of that shard, so exact under live traffic."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg
import orjson

from shards.audit import money_io
from shards.audit.model import CAP, Findings, Money, ShardView

# (saga_state or '', status) pairs a transfer may be in.
_STATES = (("", "succeeded"), ("debited", "processing"), ("done", "succeeded"), ("compensated", "failed"))
_IMMUTABLE_EVENTS = {"UPDATE": 16, "DELETE": 8, "TRUNCATE": 32}  # pg_trigger.tgtype bits


def _rule_columns(rule: str, source: str, where: str, columns: str) -> str:
    """Two columns: how many rows of ``source`` break ``rule``, and the first CAP of them as JSON."""
    return (
        f"(SELECT count(*) FROM {source} WHERE {where}) AS {rule}_n, "
        f"(SELECT coalesce(json_agg(x), '[]')::text FROM "
        f"(SELECT {columns} FROM {source} WHERE {where} ORDER BY 1 LIMIT {CAP}) x) AS {rule}_sample"
    )


_LEDGER_RULES = (
    ("double_entry", "txns", "total <> 0", "txn_id, currency, total"),
    ("wallet_balance", "acc", "kind = 'wallet' AND available <> total", "id, available, total AS entries"),
    ("wallet_negative", "acc", "kind = 'wallet' AND available < 0", "id, available"),
    ("system_balance", "acc",
     "kind <> 'wallet' AND (available <> 0 OR pending <> 0 OR id <> 'sys_' || kind || '_' || currency)",
     "id, kind, currency, available, pending"),
    # Entries carry no foreign key (migration 0005): every entry must still name an account of this shard.
    ("entry_account",
     "(SELECT s.account_id, s.currency, s.n FROM sums s LEFT JOIN accounts a ON a.id = s.account_id "
     "WHERE a.id IS NULL) m",
     "true", "account_id, currency, n AS entries"),
    ("entry_currency",
     "(SELECT s.account_id, s.currency AS entry_currency, a.currency AS account_currency, s.n "
     "FROM sums s JOIN accounts a ON a.id = s.account_id) m",
     "entry_currency <> account_currency", "account_id, entry_currency, account_currency, n AS entries"),
)  # fmt: skip
# Two passes over ledger_entries (by transaction, by account), whatever its size.
_LEDGER = (
    "WITH txns AS MATERIALIZED (SELECT txn_id, currency, sum(amount) AS total FROM ledger_entries GROUP BY 1, 2), "
    "sums AS MATERIALIZED (SELECT account_id, currency, sum(amount) AS total, count(*) AS n "
    "FROM ledger_entries GROUP BY 1, 2), "
    "acc AS MATERIALIZED (SELECT a.id, a.kind, a.currency, a.available, a.pending, coalesce(sum(s.total), 0) AS total "
    "FROM accounts a LEFT JOIN sums s ON s.account_id = a.id GROUP BY a.id) "
    "SELECT (SELECT count(*) FROM txns) AS txns, (SELECT coalesce(sum(n), 0) FROM sums) AS entries, "
    "(SELECT count(*) FROM acc) AS accounts, (SELECT coalesce(json_agg(t), '[]')::text FROM "
    "(SELECT kind, currency, sum(available) AS available, sum(total) AS total FROM acc GROUP BY 1, 2) t) AS totals, "
    + ", ".join(_rule_columns(*rule) for rule in _LEDGER_RULES)
)
_TRIGGERS = (
    "SELECT t.tgenabled::text AS enabled, t.tgtype, p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
    "WHERE t.tgrelid = 'ledger_entries'::regclass AND NOT t.tgisinternal"
)
_TRANSFER_STATES = (
    "SELECT currency, coalesce(saga_state, '') AS state, status, count(*) AS n, sum(amount) AS amount "
    "FROM transfers GROUP BY 1, 2, 3"
)
_INBOUND_STATES = "SELECT currency, status, count(*) AS n, sum(amount) AS amount FROM inbound_transfers GROUP BY 1, 2"
_BAD_STATES = (
    "SELECT id, status, saga_state FROM transfers WHERE (coalesce(saga_state, ''), status) "
    f"NOT IN (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY id LIMIT {CAP}"
)


async def scan_shard(index: int, conn: asyncpg.Connection, findings: Findings) -> ShardView:
    """Check the per-shard rules on one shard; its balances come back for the totals across shards."""
    # One snapshot for every read, so the rules compare figures from the same instant.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        ledger = await conn.fetchrow(_LEDGER)
        triggers = await conn.fetch(_TRIGGERS)
        states = await conn.fetch(_TRANSFER_STATES)
        inbound = await conn.fetch(_INBOUND_STATES)
        bad_states = await _bad_states(conn, states)
        money_io_row = await money_io.scan(index, conn, findings)
    assert ledger is not None
    _check_ledger(index, ledger, triggers, findings)
    findings.add_sample("saga_status", index, sum(r["n"] for r in states if _bad_state(r)), bad_states)
    findings.checked.update(
        ledger_txns=ledger["txns"], entries=int(ledger["entries"]), accounts=ledger["accounts"],
        transfers=sum(r["n"] for r in states), inbound_transfers=sum(r["n"] for r in inbound),
    )  # fmt: skip
    view = _view(index, ledger["totals"])
    _check_system_accounts(view, states, inbound, findings)
    money_io.check_accounts(view, money_io_row, findings)
    return view


def _check_ledger(index: int, ledger: asyncpg.Record, triggers: list[asyncpg.Record], findings: Findings) -> None:
    for rule, *_ in _LEDGER_RULES:
        findings.add_sample(rule, index, ledger[f"{rule}_n"], orjson.loads(ledger[f"{rule}_sample"]))
    for event in _unguarded(triggers):
        findings.add("immutable", index, f"no enabled trigger refuses {event} on ledger_entries")


def _view(index: int, totals: str) -> ShardView:
    """The shard's balances from the ledger query's JSON totals (one row per kind and currency)."""
    view = ShardView(index, {}, defaultdict(int))
    for row in orjson.loads(totals):
        view.entries[(row["kind"], row["currency"])] = row["total"]
        if row["kind"] == "wallet":
            view.wallets[row["currency"]] += row["available"]
    return view


def _bad_state(row: asyncpg.Record) -> bool:
    return (row["state"], row["status"]) not in _STATES


async def _bad_states(conn: asyncpg.Connection, states: list[asyncpg.Record]) -> list[dict[str, Any]]:
    # The grouped states already tell whether any is bad; only then is the transfers table read row by row.
    if not any(_bad_state(r) for r in states):
        return []
    rows = await conn.fetch(_BAD_STATES, [s for s, _ in _STATES], [s for _, s in _STATES])
    return [dict(r) for r in rows]


def _unguarded(triggers: list[asyncpg.Record]) -> list[str]:
    """The changes to ledger_entries that no enabled immutability trigger refuses."""
    covered = 0
    for row in triggers:
        if row["enabled"] in ("O", "A") and row["proname"] == "ledger_entries_immutable":
            covered |= row["tgtype"]
    return [event for event, bit in _IMMUTABLE_EVENTS.items() if not covered & bit]


def _check_system_accounts(
    view: ShardView, states: list[asyncpg.Record], inbound: list[asyncpg.Record], findings: Findings
) -> None:
    """Transit holds exactly the debited transfers; interchange, settled minus credited; nothing leaks."""
    debited, settled = _expected(states, inbound)
    currencies = {currency for _, currency in view.entries} | set(debited) | set(settled)
    for currency in sorted(currencies):
        transit = view.entries.get(("transit", currency), 0)
        interchange = view.entries.get(("interchange", currency), 0)
        if transit != debited[currency]:
            detail = {"currency": currency, "transit": transit, "debited": debited[currency]}
            findings.add("transit_balance", view.index, detail)
        if interchange != settled[currency]:
            detail = {"currency": currency, "interchange": interchange, "expected": settled[currency]}
            findings.add("interchange_balance", view.index, detail)
        system = sum(total for (kind, cur), total in view.entries.items() if cur == currency and kind != "wallet")
        if -system != view.wallets[currency]:
            detail = {"currency": currency, "wallets": view.wallets[currency], "outside_wallets": -system}
            findings.add("conservation", view.index, detail)


def _expected(states: list[asyncpg.Record], inbound: list[asyncpg.Record]) -> tuple[Money, Money]:
    """What transit and interchange should hold per currency, from this shard's transfer and inbound states."""
    debited: Money = defaultdict(int)
    settled: Money = defaultdict(int)
    for row in states:
        if row["state"] == "debited":
            debited[row["currency"]] += int(row["amount"])
        if row["state"] == "done":
            settled[row["currency"]] += int(row["amount"])
    for row in inbound:
        if row["status"] == "applied":
            settled[row["currency"]] -= int(row["amount"])
    return debited, settled
