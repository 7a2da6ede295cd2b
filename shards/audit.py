"""``shardpay audit``: every ledger rule in API.md, checked on every shard with aggregate queries.

Rules about one shard are read from one REPEATABLE READ snapshot of that shard, so they are exact even under
live traffic. Shards share no snapshot, so the cross-shard rules first compare per-slot digests of the transfer
and inbound tables and look at single transfers only in slots that differ; those reads go source shard first,
then destination, so a transfer moving during the audit is never mistaken for a broken one. The one global
sum (interchange) is re-read before a mismatch is reported.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from shardpay import ids
from shardpay.config import Settings
from shards.errors import TRANSIENT
from shards.router import SlotMap

CAP = 100  # violations listed per rule; every one is counted
_ATTEMPTS = 3  # cross-shard passes before a mismatch of global sums is believed
_CHUNK = 5000  # transfer ids per lookup query
_CLOCK_SKEW = dt.timedelta(seconds=5)  # between shard servers' clocks, when judging "too new to check"
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
# What both halves of a cross-shard transfer agree on, hashed, so whole slots compare in one row each.
_HASH = "hashtextextended(concat_ws('|', {id}, merchant_id, destination, amount, currency), 0)"
_SLOT_TRANSFERS = (
    f"SELECT substr(id, 4, 4) AS slot, saga_state AS state, count(*) AS n, sum(amount) AS amount, "
    f"sum({_HASH.format(id='id')}) AS digest FROM transfers WHERE saga_state IS NOT NULL GROUP BY 1, 2"
)
_SLOT_INBOUND = (
    f"SELECT substr(transfer_id, 4, 4) AS slot, status AS state, count(*) AS n, sum(amount) AS amount, "
    f"sum({_HASH.format(id='transfer_id')}) AS digest FROM inbound_transfers GROUP BY 1, 2"
)
_INTERCHANGE = (
    "SELECT a.currency, sum(e.amount) AS total FROM accounts a JOIN ledger_entries e ON e.account_id = a.id "
    "WHERE a.kind = 'interchange' GROUP BY 1"
)
_DEBITED = f"SELECT id, destination, {_HASH.format(id='id')} AS digest FROM transfers WHERE saga_state = 'debited'"
_INBOUND_BY_ID = (
    f"SELECT transfer_id, status, currency, amount, {_HASH.format(id='transfer_id')} AS digest "
    "FROM inbound_transfers WHERE transfer_id = ANY($1::text[])"
)
_DRILL_TRANSFERS = (
    "SELECT id, merchant_id, destination, amount, currency, saga_state FROM transfers "
    "WHERE saga_state IS NOT NULL AND substr(id, 4, 4) = ANY($1::text[])"
)
_DRILL_INBOUND = (
    "SELECT transfer_id, merchant_id, destination, amount, currency, status, created_at FROM inbound_transfers "
    "WHERE substr(transfer_id, 4, 4) = ANY($1::text[])"
)
_SAME = ("merchant_id", "destination", "amount", "currency")


@dataclass
class Findings:
    """Violations, counted in full and listed up to CAP per rule."""

    counts: Counter[str] = field(default_factory=Counter)
    listed: list[dict[str, Any]] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    _shown: Counter[str] = field(default_factory=Counter)

    def add(self, rule: str, shard: int | None, detail: Any, count: int = 1) -> None:
        self._list({"rule": rule, "shard": shard, "detail": detail})
        self.counts[rule] += count

    def add_sample(self, rule: str, shard: int, count: int, sample: list[Any]) -> None:
        for detail in sample:
            self._list({"rule": rule, "shard": shard, "detail": detail})
        if count:
            self.counts[rule] += count

    def merge(self, other: Findings) -> None:
        for item in other.listed:
            self._list(item)
        self.counts += other.counts
        self.checked.update(other.checked)

    def _list(self, item: dict[str, Any]) -> None:
        if self._shown[item["rule"]] < CAP:
            self._shown[item["rule"]] += 1
            self.listed.append(item)


@dataclass(frozen=True)
class Digest:
    """Count, amount and hash sum of a set of transfer halves: equal digests, equal sets (barring collisions)."""

    n: int = 0
    amount: int = 0
    hash: int = 0

    def __add__(self, other: Digest) -> Digest:
        return Digest(self.n + other.n, self.amount + other.amount, self.hash + other.hash)

    def __sub__(self, other: Digest) -> Digest:
        return Digest(self.n - other.n, self.amount - other.amount, self.hash - other.hash)


SlotDigests = defaultdict[str, defaultdict[str, Digest]]
Money = defaultdict[str, int]  # currency -> minor units


def _slot_digests() -> SlotDigests:
    return defaultdict(lambda: defaultdict(Digest))


@dataclass
class ShardView:
    """One shard's balances, read from one snapshot: (kind, currency) -> sum of entries, wallets by available."""

    index: int
    entries: dict[tuple[str, str], int]
    wallets: Money


async def audit(settings: Settings) -> dict[str, Any]:
    """Check every ledger rule on every shard; the report's ``ok`` is False if any rule is broken anywhere."""
    control = await asyncpg.connect(settings.control_dsn, timeout=settings.db_timeout)
    try:
        slots = await SlotMap.load(control)
    finally:
        await control.close()
    conns: list[asyncpg.Connection | None] = []
    try:
        for dsn in settings.shard_dsns:
            conns.append(await _connect(dsn, settings))
        return await _audit(conns, slots)
    finally:
        for conn in conns:
            if conn is not None:
                await conn.close()


async def _connect(dsn: str, settings: Settings) -> asyncpg.Connection | None:
    """A connection, or None if the shard stays unreachable for a few tries (a full server is busy, not down)."""
    for attempt in range(_ATTEMPTS):
        try:
            return await asyncpg.connect(dsn, timeout=settings.db_timeout)
        except TRANSIENT:
            if attempt + 1 < _ATTEMPTS:
                await asyncio.sleep(0.5)
    return None


async def _audit(conns: list[asyncpg.Connection | None], slots: SlotMap) -> dict[str, Any]:
    findings = Findings()
    findings.checked["shards"] = len(conns)
    live = [(index, conn) for index, conn in enumerate(conns) if conn is not None]
    for index in (index for index, conn in enumerate(conns) if conn is None):
        findings.add("shard_unavailable", index, "unreachable: nothing on it was checked")
    views = await asyncio.gather(*(_scan_shard(index, conn, findings) for index, conn in live))
    credited: Money = defaultdict(int)
    if len(live) == len(conns):
        # Every shard answered: the cross-shard rules need them all.
        cross, credited = await _confirmed_cross([conn for _, conn in live], slots)
        findings.merge(cross)
    return {
        "ok": not findings.counts,
        "shards": len(conns),
        "violations": findings.listed,
        "violation_counts": dict(findings.counts),
        "totals": _totals(views, credited, findings),
        "checked": dict(findings.checked),
    }


async def _scan_shard(index: int, conn: asyncpg.Connection, findings: Findings) -> ShardView:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        ledger = await conn.fetchrow(_LEDGER)
        triggers = await conn.fetch(_TRIGGERS)
        states = await conn.fetch(_TRANSFER_STATES)
        inbound = await conn.fetch(_INBOUND_STATES)
        bad_states = await _bad_states(conn, states)
    assert ledger is not None
    for rule, *_ in _LEDGER_RULES:
        findings.add_sample(rule, index, ledger[f"{rule}_n"], orjson.loads(ledger[f"{rule}_sample"]))
    for event in _unguarded(triggers):
        findings.add("immutable", index, f"no enabled trigger refuses {event} on ledger_entries")
    findings.add_sample("saga_status", index, sum(r["n"] for r in states if _bad_state(r)), bad_states)
    findings.checked.update(
        ledger_txns=ledger["txns"], entries=int(ledger["entries"]), accounts=ledger["accounts"],
        transfers=sum(r["n"] for r in states), inbound_transfers=sum(r["n"] for r in inbound),
    )  # fmt: skip
    view = ShardView(index, {}, defaultdict(int))
    for row in orjson.loads(ledger["totals"]):
        view.entries[(row["kind"], row["currency"])] = row["total"]
        if row["kind"] == "wallet":
            view.wallets[row["currency"]] += row["available"]
    _check_system_accounts(view, states, inbound, findings)
    return view


def _bad_state(row: asyncpg.Record) -> bool:
    return (row["state"], row["status"]) not in _STATES


async def _bad_states(conn: asyncpg.Connection, states: list[asyncpg.Record]) -> list[dict[str, Any]]:
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


async def _confirmed_cross(conns: list[asyncpg.Connection], slots: SlotMap) -> tuple[Findings, Money]:
    """Cross-shard rules, passed again while they fail: shards share no snapshot, so a sum may be caught mid-move."""
    for attempt in range(1, _ATTEMPTS + 1):
        findings, credited = await _cross(conns, slots)
        findings.checked["cross_shard_passes"] = attempt
        if not findings.counts:
            break
        await asyncio.sleep(0.2)
    return findings, credited


async def _cross(conns: list[asyncpg.Connection], slots: SlotMap) -> tuple[Findings, Money]:
    findings = Findings()
    sources, inbound = _slot_digests(), _slot_digests()
    interchange: Money = defaultdict(int)
    debited: list[asyncpg.Record] = []
    for index, conn in enumerate(conns):
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for row in await conn.fetch(_SLOT_TRANSFERS):
                _add_source(row, index, slots, sources, findings)
            for row in await conn.fetch(_SLOT_INBOUND):
                inbound[row["slot"]][row["state"]] += Digest(row["n"], int(row["amount"]), int(row["digest"]))
            for row in await conn.fetch(_INTERCHANGE):
                interchange[row["currency"]] += int(row["total"])
            debited += await conn.fetch(_DEBITED)
    findings.checked.update(
        cross_shard_transfers=sum(d.n for states in sources.values() for d in states.values()), in_flight=len(debited)
    )
    credited, suspects = await _set_in_flight_apart(conns, slots, debited, inbound)
    drill = sorted(suspects | {slot for slot in set(sources) | set(inbound) if _differs(sources[slot], inbound[slot])})
    findings.checked["slots_drilled"] = len(drill)
    await _drill(conns, slots, drill, findings)
    for currency in sorted(set(interchange) | set(credited)):
        if interchange[currency] != -credited[currency]:
            detail = {"currency": currency, "interchange": interchange[currency], "credited": credited[currency]}
            findings.add("interchange_total", None, detail)
    return findings, credited


def _add_source(row: asyncpg.Record, shard: int, slots: SlotMap, sources: SlotDigests, findings: Findings) -> None:
    slot = _slot(row["slot"])
    if slot is None or slots.shard_of(slot) != shard:
        findings.add("transfer_routing", shard, {"slot": row["slot"], "transfers": row["n"]}, row["n"])
        return
    sources[row["slot"]][row["state"]] += Digest(row["n"], int(row["amount"]), int(row["digest"]))


def _slot(text: str) -> int | None:
    """The slot in an id's 4 hex digits, or None for a malformed stored id."""
    if len(text) != 4 or any(c not in "0123456789abcdef" for c in text):
        return None
    return int(text, 16)


def _differs(source: defaultdict[str, Digest], inbound: defaultdict[str, Digest]) -> bool:
    return source["done"] != inbound["applied"] or source["compensated"] != inbound["aborted"]


async def _set_in_flight_apart(
    conns: list[asyncpg.Connection], slots: SlotMap, debited: list[asyncpg.Record], inbound: SlotDigests
) -> tuple[Money, set[str]]:
    """Take the inbound halves of still-debited transfers out of the slot digests (they may legitimately exist).

    Returns the amounts already credited on destination shards, and slots whose halves disagree.
    """
    by_shard: defaultdict[int, dict[str, asyncpg.Record]] = defaultdict(dict)
    suspects: set[str] = set()
    for row in debited:
        slot = ids.parse(row["destination"], "wal")
        if slot is None:
            suspects.add(row["id"][3:7])
            continue
        by_shard[slots.shard_of(slot)][row["id"]] = row
    credited: Money = defaultdict(int)
    for shard, wanted in by_shard.items():
        keys = list(wanted)
        for start in range(0, len(keys), _CHUNK):
            for half in await conns[shard].fetch(_INBOUND_BY_ID, keys[start : start + _CHUNK]):
                slot = half["transfer_id"][3:7]
                inbound[slot][half["status"]] -= Digest(1, half["amount"], half["digest"])
                if half["digest"] != wanted[half["transfer_id"]]["digest"]:
                    suspects.add(slot)
                if half["status"] == "applied":
                    credited[half["currency"]] += half["amount"]
    return credited, suspects


async def _drill(conns: list[asyncpg.Connection], slots: SlotMap, drill: list[str], findings: Findings) -> None:
    """Transfer by transfer, in the slots whose digests differ. Sources are read first (see the module doc)."""
    if not drill:
        return
    owned: defaultdict[int, list[str]] = defaultdict(list)
    for slot in drill:
        number = _slot(slot)
        if number is None:
            findings.add("inbound_orphan", None, {"slot": slot, "problem": "malformed transfer id"})
            continue
        owned[slots.shard_of(number)].append(slot)
    cutoff = dt.datetime.now(dt.UTC) - _CLOCK_SKEW
    transfers = {
        row["id"]: row for shard, mine in owned.items() for row in await conns[shard].fetch(_DRILL_TRANSFERS, mine)
    }
    halves: defaultdict[str, list[tuple[int, asyncpg.Record]]] = defaultdict(list)
    for shard, conn in enumerate(conns):
        for row in await conn.fetch(_DRILL_INBOUND, drill):
            halves[row["transfer_id"]].append((shard, row))
    for transfer_id, row in transfers.items():
        _check_pair(row, halves.get(transfer_id, []), slots, findings)
    for transfer_id, found in halves.items():
        if transfer_id not in transfers and any(half["created_at"] < cutoff for _, half in found):
            findings.add("inbound_orphan", found[0][0], {"transfer": transfer_id, "status": found[0][1]["status"]})


def _check_pair(
    transfer: asyncpg.Record, halves: list[tuple[int, asyncpg.Record]], slots: SlotMap, findings: Findings
) -> None:
    source = slots.shard_of(int(transfer["id"][3:7], 16))
    if len(halves) > 1:
        findings.add("inbound_duplicate", source, {"transfer": transfer["id"], "shards": [s for s, _ in halves]})
    slot = ids.parse(transfer["destination"], "wal")
    home = slots.shard_of(slot) if slot is not None else None
    half = next((row for shard, row in halves if shard == home), None)
    if halves and half is None:
        findings.add("saga_inbound", source, {"transfer": transfer["id"], "problem": "credited off its shard"})
        return
    if half is not None and any(half[name] != transfer[name] for name in _SAME):
        findings.add("saga_inbound", source, {"transfer": transfer["id"], "problem": "halves differ"})
        return
    wanted = {"done": "applied", "compensated": "aborted"}.get(transfer["saga_state"])
    if wanted is not None and (half is None or half["status"] != wanted):
        detail = {"transfer": transfer["id"], "saga_state": transfer["saga_state"],
                  "inbound": None if half is None else half["status"]}  # fmt: skip
        findings.add("saga_inbound", source, detail)


def _totals(views: list[ShardView], credited: Money, findings: Findings) -> dict[str, dict[str, int]]:
    """Per currency: the money in the system (what funding put in) and where it is now."""
    totals: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for view in views:
        for (kind, currency), total in view.entries.items():
            totals[currency][kind if kind != "wallet" else "wallet_entries"] += total
        for currency, available in view.wallets.items():
            totals[currency]["wallets"] += available
    report: dict[str, dict[str, int]] = {}
    for currency, sums in sorted(totals.items()):
        if not any(sums.values()):
            continue  # a currency nobody holds
        in_flight = sums["transit"] + sums["interchange"]
        outside = sum(v for k, v in sums.items() if k not in ("wallets", "wallet_entries", "funding"))
        report[currency] = {
            "total": -sums["funding"], "wallets": sums["wallets"], "in_flight": in_flight,
            "transit": sums["transit"], "interchange": sums["interchange"], "credited_in_flight": credited[currency],
        }  # fmt: skip
        if -sums["funding"] != sums["wallets"] + outside:
            findings.add("conservation", None, {"currency": currency, **report[currency]})
    return report
