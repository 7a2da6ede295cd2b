"""A stored run's report: JSON for people and tools, and a CSV for finance, both written as they are read from
the control database (a cursor per section), so a report of any size takes the same memory.

The JSON is the run's figures (counts and totals per category and currency, fees booked, what was fixed), then
``records`` (every record not matched, both sides side by side), ``fixed_records``, ``settled_on_other_day`` and
``changes_since_last_run`` (records whose category changed since the previous run of that day).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import AsyncIterator
from datetime import datetime
from typing import IO, Any

import asyncpg
import orjson

from shardpay.domain.settlement import CATEGORIES, in_order
from shards import reconcile_runs

CSV_COLUMNS = (
    "run", "date", "category", "fixed", "reference", "type", "shard", "psp_reference", "psp_amount", "shardpay_amount",
    "psp_currency", "shardpay_currency", "psp_status", "shardpay_status", "psp_fee", "fee_booked", "lines", "line",
    "settled_at", "final_at", "note",
)  # fmt: skip
_INDENT = "\n    "


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def head(run: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": "reconciliation_run", "id": run["id"], "date": run["day"].isoformat(), "trigger": run["trigger"],
        "source": run["source"], "started": _iso(run["started_at"]), "finished": _iso(run["finished_at"]),
        "exit_status": run["exit_status"], "needs_review": run["needs_review"], "fixed": run["fixed"],
        "lines": run["lines"], "records_total": run["records"], "counts": in_order(orjson.loads(run["counts"])),
        "totals": orjson.loads(run["totals"]), "fees": orjson.loads(run["fees"]),
    }  # fmt: skip


def record(item: asyncpg.Record) -> dict[str, Any]:
    """One record, the PSP's side and shardpay's side by side (null for the side that has none)."""
    psp = None if item["psp_reference"] is None else {
        "psp_reference": item["psp_reference"], "amount": item["psp_amount"], "currency": item["psp_currency"],
        "fee": item["psp_fee"], "status": item["psp_status"], "settled_at": _iso(item["settled_at"]),
        "lines": item["lines"], "line": item["line_no"], "fee_booked": item["fee_booked"],
    }  # fmt: skip
    ours = None if item["our_status"] is None else {
        "amount": item["our_amount"], "currency": item["our_currency"], "status": item["our_status"],
        "final_at": _iso(item["final_at"]),
    }  # fmt: skip
    return {"category": item["category"], "reference": item["reference"], "type": item["type"], "shard": item["shard"],
            "fixed": item["fixed"], "note": item["note"], "psp": psp, "shardpay": ours}  # fmt: skip


def csv_row(run: asyncpg.Record, item: asyncpg.Record) -> list[Any]:
    return [
        run["id"], run["day"].isoformat(), item["category"], _flag(item["fixed"]), item["reference"], item["type"],
        item["shard"], item["psp_reference"], item["psp_amount"], item["our_amount"], item["psp_currency"],
        item["our_currency"], item["psp_status"], item["our_status"], item["psp_fee"], _flag(item["fee_booked"]),
        item["lines"], item["line_no"], _iso(item["settled_at"]), _iso(item["final_at"]), item["note"],
    ]  # fmt: skip


class _Json:
    """Writes an indented head, then arrays one compact element per line."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def start(self, fields: dict[str, Any]) -> None:
        text = orjson.dumps(fields, option=orjson.OPT_INDENT_2).decode()
        self.out.write(text.rstrip().removesuffix("}").rstrip())

    async def array(self, name: str, rows: AsyncIterator[dict[str, Any]], indent: str = "\n  ") -> None:
        self.out.write(f',{indent}"{name}": [')
        first = True
        async for row in rows:
            self.out.write(("" if first else ",") + indent + "  " + orjson.dumps(row).decode())
            first = False
        self.out.write("]" if first else indent + "]")


async def write(control: asyncpg.Connection, run_id: int, out: IO[str], csv_path: str | None = None) -> None:
    """The report of stored run ``run_id`` on ``out`` (and as CSV at ``csv_path``)."""
    run = await reconcile_runs.run(control, run_id)
    if run is None:
        raise LookupError(f"no reconciliation run {run_id}")
    earlier = await reconcile_runs.previous(control, run)
    # A local file, written row by row as the cursor reads: nothing else runs on this loop meanwhile.
    with open(csv_path, "w", newline="") if csv_path else contextlib.nullcontext() as sheet:  # noqa: ASYNC230
        rows = csv.writer(sheet) if sheet is not None else None
        if rows is not None:
            rows.writerow(CSV_COLUMNS)
        async with control.transaction(readonly=True):  # the cursors' transaction
            json = _Json(out)
            json.start(head(run))
            await json.array("records", _records(control, run, rows))
            await json.array("fixed_records", _fixed(control, run_id))
            await json.array("settled_on_other_day", _other_day(control, run_id))
            await _changes(json, control, run, earlier)
    out.write("\n}\n")


async def _records(control: asyncpg.Connection, run: asyncpg.Record, rows: Any) -> AsyncIterator[dict[str, Any]]:
    async for item in reconcile_runs.items(control, run["id"], "category <> 'matched'"):
        if rows is not None:
            rows.writerow(csv_row(run, item))
        yield record(item)


async def _fixed(control: asyncpg.Connection, run_id: int) -> AsyncIterator[dict[str, Any]]:
    async for item in reconcile_runs.items(control, run_id, "fixed"):
        yield {"reference": item["reference"], "type": item["type"], "status": item["our_status"],
               "psp_reference": item["psp_reference"], "shard": item["shard"]}  # fmt: skip


async def _other_day(control: asyncpg.Connection, run_id: int) -> AsyncIterator[dict[str, Any]]:
    async for item in reconcile_runs.items(control, run_id, "category = 'matched'"):
        yield {"reference": item["reference"], "type": item["type"], "note": item["note"],
               "final_at": _iso(item["final_at"]), "settled_at": _iso(item["settled_at"])}  # fmt: skip


async def _changes(json: _Json, control: asyncpg.Connection, run: asyncpg.Record, earlier: int | None) -> None:
    json.out.write(',\n  "changes_since_last_run": {\n    "previous_run": ' + orjson.dumps(earlier).decode())
    if earlier is not None:
        before = await reconcile_runs.run(control, earlier)
        assert before is not None
        now, was = orjson.loads(run["counts"]), orjson.loads(before["counts"])
        delta = {c: now.get(c, 0) - was.get(c, 0) for c in CATEGORIES if now.get(c, 0) != was.get(c, 0)}
        json.out.write(',\n    "counts": ' + orjson.dumps(delta).decode())
        await json.array("records", _changed(control, run["id"], earlier), indent="\n    ")
    json.out.write("\n  }")


async def _changed(control: asyncpg.Connection, run_id: int, earlier: int) -> AsyncIterator[dict[str, Any]]:
    async for row in reconcile_runs.changes(control, run_id, earlier):
        yield dict(row)
