"""The day's settlement file, streamed from a server-side cursor: one CSV line per movement final that UTC day.

``POST /sim/settlement-faults`` makes a day's file lie (lines omitted, amounts altered, lines twice, charges
nobody made); the lie is stored per day and applied on every fetch, so two fetches agree.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson
from starlette.responses import StreamingResponse

from pspsim.money import fee

HEADER = ("psp_reference", "reference", "type", "amount", "currency", "fee", "status", "settled_at")
_SETTLED = {"succeeded": "settled", "paid": "settled", "failed": "failed"}
_CHUNK = 500
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)

_LINES = """
SELECT id, reference, type, amount, currency, status, settled_at FROM movements
WHERE settled_at >= $1 AND settled_at < $2 AND status <> 'pending'
ORDER BY settled_at, id
"""


@dataclass(frozen=True)
class Lies:
    """How a day's file lies. A ``ref`` is matched against both shardpay's reference and the PSP's id."""

    omit: frozenset[str] = frozenset()
    alter_amount: dict[str, int] = field(default_factory=dict)
    duplicate: frozenset[str] = frozenset()
    unknown: int = 0


def parse_day(text: str) -> date:
    """``YYYY-MM-DD`` exactly; ValueError otherwise."""
    if not _DAY.fullmatch(text):
        raise ValueError(text)
    return date.fromisoformat(text)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def line(row: dict[str, Any]) -> tuple[str, ...]:
    status = _SETTLED[row["status"]]
    charged = row["type"] == "charge" and status == "settled"
    amount_fee = fee(row["amount"], row["currency"]) if charged else 0
    return (row["id"], row["reference"], row["type"], str(row["amount"]), row["currency"], str(amount_fee), status,
            iso(row["settled_at"]))  # fmt: skip


def lie(lies: Lies, row: dict[str, Any]) -> list[tuple[str, ...]]:
    """The lines the file shows for one true movement: none, one (perhaps altered), or two."""
    refs = {row["id"], row["reference"]}
    if refs & lies.omit:
        return []
    altered = next((lies.alter_amount[r] for r in refs if r in lies.alter_amount), None)
    shown = line(row)
    if altered is not None:
        shown = (*shown[:3], str(altered), *shown[4:])
    return [shown, shown] if refs & lies.duplicate else [shown]


def unknown_lines(day: date, count: int) -> list[tuple[str, ...]]:
    """``count`` settled charges nobody made: shardpay-shaped ``po_`` references that exist nowhere, derived from
    the day and the index so that every fetch shows the same ones."""
    lines = []
    for index in range(count):
        digest = hashlib.blake2b(f"{day.isoformat()}:{index}".encode(), digest_size=24).digest()
        slot = int.from_bytes(digest[:2], "big") % 4096
        reference = f"po_{slot:04x}{digest[2:12].hex()}"
        amount = 100 + int.from_bytes(digest[12:16], "big") % 100_000
        settled_at = datetime.combine(day, time(12), UTC) + timedelta(milliseconds=index)
        row = {"id": f"ch_{digest[12:24].hex()}", "reference": reference, "type": "charge", "amount": amount,
               "currency": "USD", "status": "succeeded", "settled_at": settled_at}  # fmt: skip
        lines.append(line(row))
    return lines


def _csv(rows: Iterable[tuple[str, ...]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


async def lies_for(pool: asyncpg.Pool, day: date) -> Lies:
    stored = await pool.fetchval("SELECT body FROM settlement_faults WHERE day = $1", day)
    if stored is None:
        return Lies()
    spec = orjson.loads(stored)
    return Lies(frozenset(spec["omit"]), dict(spec["alter_amount"]), frozenset(spec["duplicate"]), spec["unknown"])


async def _stream(pool: asyncpg.Pool, day: date, lies: Lies) -> AsyncIterator[bytes]:
    yield _csv([HEADER])
    start = datetime.combine(day, time(0), UTC)
    batch: list[tuple[str, ...]] = []
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        async for row in conn.cursor(_LINES, start, start + timedelta(days=1), prefetch=_CHUNK):
            batch.extend(lie(lies, dict(row)))
            if len(batch) >= _CHUNK:
                yield _csv(batch)
                batch = []
    batch.extend(unknown_lines(day, lies.unknown))
    if batch:
        yield _csv(batch)


async def settlement_file(pool: asyncpg.Pool, day: date) -> StreamingResponse:
    """The response for ``day``. The lies are read first, so a database that is down is a 503 before any
    byte of the file has been sent."""
    lies = await lies_for(pool, day)
    return StreamingResponse(_stream(pool, day, lies), media_type="text/csv; charset=utf-8")
