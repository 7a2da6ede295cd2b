"""Rules across shards, and the money totals over all of them.

Shards share no snapshot, so whole slots are compared first by digests of the transfer and inbound tables, and
single transfers are looked at only in slots that differ; those reads go source shard first, then destination,
so a transfer moving during the audit is never mistaken for a broken one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, defaultdict

import asyncpg

from shardpay import ids
from shards.audit.model import Digest, Findings, Money, ShardView, SlotDigests, slot_digests
from shards.router import SlotMap

ATTEMPTS = 3  # cross-shard passes before a mismatch of global sums is believed
_CHUNK = 5000  # transfer ids per lookup query
_CLOCK_SKEW = dt.timedelta(seconds=5)  # between shard servers' clocks, when judging "too new to check"
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


async def confirmed_cross(conns: list[asyncpg.Connection], slots: SlotMap) -> tuple[Findings, Money]:
    """Cross-shard rules, passed again while they fail: shards share no snapshot, so a sum may be caught mid-move."""
    for attempt in range(1, ATTEMPTS + 1):
        findings, credited = await _cross(conns, slots)
        findings.checked["cross_shard_passes"] = attempt
        if not findings.counts:
            break
        await asyncio.sleep(0.2)
    return findings, credited


async def _cross(conns: list[asyncpg.Connection], slots: SlotMap) -> tuple[Findings, Money]:
    findings = Findings()
    sources, inbound = slot_digests(), slot_digests()
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
    _check_interchange(interchange, credited, findings)
    return findings, credited


def _check_interchange(interchange: Money, credited: Money, findings: Findings) -> None:
    """What the interchange accounts hold, over all shards, is what is credited but not yet settled at the source."""
    for currency in sorted(set(interchange) | set(credited)):
        if interchange[currency] != -credited[currency]:
            detail = {"currency": currency, "interchange": interchange[currency], "credited": credited[currency]}
            findings.add("interchange_total", None, detail)


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
    by_shard, suspects = _by_destination(slots, debited)
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


def _by_destination(
    slots: SlotMap, debited: list[asyncpg.Record]
) -> tuple[defaultdict[int, dict[str, asyncpg.Record]], set[str]]:
    """Debited transfers by the shard of their destination wallet; a bad destination makes its slot a suspect."""
    by_shard: defaultdict[int, dict[str, asyncpg.Record]] = defaultdict(dict)
    suspects: set[str] = set()
    for row in debited:
        slot = ids.parse(row["destination"], "wal")
        if slot is None:
            suspects.add(row["id"][3:7])
            continue
        by_shard[slots.shard_of(slot)][row["id"]] = row
    return by_shard, suspects


async def _drill(conns: list[asyncpg.Connection], slots: SlotMap, drill: list[str], findings: Findings) -> None:
    """Transfer by transfer, in the slots whose digests differ. Sources are read first (see the module doc)."""
    if not drill:
        return
    owned = _owners(slots, drill, findings)
    # Taken before the sources are read: a half created after it may belong to a transfer those reads missed.
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


def _owners(slots: SlotMap, drill: list[str], findings: Findings) -> defaultdict[int, list[str]]:
    """The slots to drill by the shard that owns them; a malformed slot has no owner and is reported instead."""
    owned: defaultdict[int, list[str]] = defaultdict(list)
    for slot in drill:
        number = _slot(slot)
        if number is None:
            findings.add("inbound_orphan", None, {"slot": slot, "problem": "malformed transfer id"})
            continue
        owned[slots.shard_of(number)].append(slot)
    return owned


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


def totals(views: list[ShardView], credited: Money, findings: Findings) -> dict[str, dict[str, int]]:
    """Per currency: the money in the system (what funding put in) and where it is now."""
    report: dict[str, dict[str, int]] = {}
    for currency, sums in sorted(_sum_views(views).items()):
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


def _sum_views(views: list[ShardView]) -> defaultdict[str, Counter[str]]:
    """Per currency, each account kind's entries summed over the shards, and wallets by what is available."""
    sums: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for view in views:
        for (kind, currency), total in view.entries.items():
            sums[currency][kind if kind != "wallet" else "wallet_entries"] += total
        for currency, available in view.wallets.items():
            sums[currency]["wallets"] += available
    return sums
