"""``shardpay reconcile FILE | --date YYYY-MM-DD [--csv PATH]``, ``--history``, ``--show RUN``, ``--daily``.

Exit status: 0 every record matched or was fixed, 1 something needs review, 2 bad input (a malformed file, with
the line and the bad value; bad arguments), 3 the run could not happen (the PSP or a database unreachable).
With 2 and 3 nothing was stored and nothing from the file was fixed; the error is JSON on stdout and a line on
stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
import orjson
import uvloop

import psp
from shardpay.commands.base import add
from shardpay.config import Settings
from shardpay.domain.errors import ApiError
from shardpay.domain.settlement import MalformedFile, in_order, parse_day
from shards.errors import TRANSIENT

EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 2, 3
_UNAVAILABLE: tuple[type[BaseException], ...] = (*TRANSIENT, asyncpg.PostgresError, psp.PspError, ApiError)


def register(sub: Any) -> None:
    what = "compare the PSP's settlement file with every shard, fix what can be fixed, report the rest"
    parser = add(sub, "reconcile", _reconcile, what)
    parser.add_argument("file", nargs="?", help="a settlement file (CSV in PSP.md's format)")
    parser.add_argument("--date", type=_day, help="the UTC day, YYYY-MM-DD; without FILE, the PSP's file of that day")
    parser.add_argument("--csv", dest="csv_path", metavar="PATH", help="also write the records as CSV for finance")
    parser.add_argument("--history", action="store_true", help="list stored runs, newest first (of --date only)")
    parser.add_argument("--limit", type=int, default=50, help="with --history: at most this many runs")
    parser.add_argument("--show", type=int, metavar="RUN", help="print the report of a stored run (and --csv)")
    daily = "reconcile the previous day once a day at SHARDPAY_RECONCILE_AT (UTC), until stopped"
    parser.add_argument("--daily", action="store_true", help=daily)


def _day(text: str) -> Any:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _usage(args: argparse.Namespace) -> str | None:
    """What is wrong with this combination of arguments, if anything."""
    if args.daily and (args.file or args.date or args.csv_path or args.history or args.show is not None):
        return "--daily takes no other argument"
    if args.history and (args.file or args.csv_path or args.show is not None):
        return "--history takes only --date and --limit"
    if args.show is not None and (args.file or args.date):
        return "--show RUN takes only --csv"
    if not (args.daily or args.history or args.show is not None or args.file or args.date):
        return "give a settlement FILE or --date YYYY-MM-DD (or --history, --show RUN, --daily)"
    return None


def _reconcile(args: argparse.Namespace, settings: Settings) -> Any:
    problem = _usage(args)
    if problem is not None:
        raise SystemExit(_refuse(EXIT_BAD_INPUT, "bad_arguments", problem))
    if args.daily:
        return _daily(settings)
    if args.history:
        return _history(args, settings)
    code = uvloop.run(_show(args, settings) if args.show is not None else _run(args, settings))
    if code:
        raise SystemExit(code)
    return None


def _refuse(code: int, kind: str, message: str, detail: dict[str, Any] | None = None) -> int:
    error = {"type": kind, "message": message, **(detail or {})}
    sys.stdout.write(orjson.dumps({"error": error}, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stderr.write(orjson.dumps({"error": message}).decode() + "\n")
    return code


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from shardpay.services.reconcile.source import BadInput

    try:
        _writable(args.csv_path)
        run_id, exit_status = await _reconcile_now(args, settings)
    except MalformedFile as exc:
        return _refuse(EXIT_BAD_INPUT, "malformed_file", str(exc), exc.as_dict())
    except BadInput as exc:
        return _refuse(EXIT_BAD_INPUT, "bad_input", str(exc))
    except psp.PspRejected as exc:
        return _refuse(EXIT_BAD_INPUT, "psp_refused", f"the PSP refused the settlement file: {exc}")
    except _UNAVAILABLE as exc:
        return _refuse(EXIT_UNAVAILABLE, "unavailable", f"the run could not happen: {type(exc).__name__}: {exc}")
    await _write_report(settings, run_id, args.csv_path)
    return exit_status


def _writable(path: str | None) -> None:
    """Refuse an unusable --csv before anything changes."""
    from shardpay.services.reconcile.source import BadInput

    if path is None:
        return
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise BadInput(f"cannot write --csv {path!r}: {exc.strerror}") from None


async def _reconcile_now(args: argparse.Namespace, settings: Settings) -> tuple[int, int]:
    from shardpay.services.reconcile.run import Request, reconcile_file
    from shardpay.services.reconcile.source import FileSource, PspSource
    from shards.pools import open_shards

    client = None if args.file else psp.connect(settings)
    try:
        source = FileSource(args.file) if client is None else PspSource(client, args.date)
        async with open_shards(settings, pool_max=4) as shards:
            result = await reconcile_file(settings, shards, Request(source, args.date))
        return result.run_id, result.summary.exit_status
    finally:
        if client is not None:
            await client.aclose()


async def _write_report(settings: Settings, run_id: int, csv_path: str | None) -> None:
    from shardpay.services.reconcile import report

    conn = await asyncpg.connect(settings.control_dsn, timeout=settings.db_timeout)
    try:
        await report.write(conn, run_id, sys.stdout, csv_path)
    finally:
        await conn.close()


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    try:
        await _write_report(settings, args.show, args.csv_path)
    except LookupError as exc:
        return _refuse(EXIT_BAD_INPUT, "bad_input", str(exc))
    except _UNAVAILABLE as exc:
        return _refuse(EXIT_UNAVAILABLE, "unavailable", f"{type(exc).__name__}: {exc}")
    return 0


async def _history(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shards import reconcile_runs

    conn = await asyncpg.connect(settings.control_dsn, timeout=settings.db_timeout)
    try:
        rows = await reconcile_runs.history(conn, args.date, args.limit)
    finally:
        await conn.close()
    data = [{"id": r["id"], "date": r["day"].isoformat(), "trigger": r["trigger"], "source": r["source"],
             "started": r["started_at"].isoformat(), "finished": r["finished_at"].isoformat(), "lines": r["lines"],
             "records": r["records"], "counts": in_order(orjson.loads(r["counts"])), "fixed": r["fixed"],
             "needs_review": r["needs_review"], "exit_status": r["exit_status"]} for r in rows]  # fmt: skip
    return {"object": "list", "data": data, "count": len(data)}


async def _daily(settings: Settings) -> None:
    from shardpay.commands.events import until_signalled
    from shardpay.services.reconcile.daily import run_daily

    await until_signalled(run_daily, settings, "reconciler")
