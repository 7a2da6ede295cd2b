"""``/sim/*``: the simulator's own truth and its knobs, for tests, drills and reconciliation. No auth, but only
from loopback: a knob that makes a PSP lie must not be reachable from elsewhere."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pspsim import store, validate
from pspsim.faults import FaultError, Faults, merge
from pspsim.http import SimError, invalid, json, read_json
from pspsim.settlement import parse_day
from pspsim.state import sim_of

MAX_UNKNOWN = 1_000_000


def _loopback(request: Request) -> None:
    host = request.client.host if request.client else ""
    try:
        local = ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        raise SimError(403, "invalid_request_error", "loopback_only", f"/sim is only served to loopback, not {host!r}.")


async def get_faults(request: Request) -> Response:
    _loopback(request)
    return json(200, sim_of(request).faults.as_dict())


async def put_faults(request: Request) -> Response:
    _loopback(request)
    sim = sim_of(request)
    try:
        faults = merge(sim.faults, await read_json(request))
    except FaultError as error:
        raise invalid(error.field, str(error)) from None
    await sim.set_faults(faults)
    return json(200, faults.as_dict())


async def records(request: Request) -> Response:
    _loopback(request)
    kind = validate.query(request.query_params.get("type"), "type", frozenset({"charge", "refund", "payout"}))
    reference = validate.query(request.query_params.get("reference"), "reference")
    data = await store.records(sim_of(request).pool, kind, reference)
    return json(200, {"object": "list", "data": data})


async def stats(request: Request) -> Response:
    _loopback(request)
    return json(200, sim_of(request).stats_report())


_EVENTS = """
SELECT id, type, state, copies, attempts, last_status, last_error, body, created, delivered_at FROM events
WHERE ($1::text IS NULL OR type = $1) ORDER BY seq
"""


async def list_events(request: Request) -> Response:
    """Every webhook and its fate (pending, delivered, dropped, dead): how a test tells a drop from a loss."""
    _loopback(request)
    rows = await sim_of(request).pool.fetch(_EVENTS, validate.query(request.query_params.get("type"), "type"))
    return json(200, {"object": "list", "data": [_event(row) for row in rows]})


def _event(row: asyncpg.Record) -> dict[str, Any]:
    shown = {k: v for k, v in row.items() if k not in ("body", "created", "delivered_at")}
    delivered = row["delivered_at"].timestamp() if row["delivered_at"] else None
    return {
        **shown,
        "event": orjson.loads(row["body"]),
        "created": row["created"].timestamp(),
        "delivered_at": delivered,
    }


async def reset(request: Request) -> Response:
    """Forget every record, event, session, card and fault (tests only)."""
    _loopback(request)
    sim = sim_of(request)
    await sim.pool.execute(
        "TRUNCATE idem_keys, movements, hosted_sessions, payment_methods, events, settlement_faults, faults"
    )
    sim.faults = Faults()
    sim.stats.clear()
    return json(200, {"reset": True})


def _refs(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(validate.printable(v) for v in value):
        raise invalid(name, f"'{name}' must be a list of references, got {value!r}.")
    return value


def _lies(body: dict[str, Any]) -> dict[str, Any]:
    altered = body.get("alter_amount", {})
    if not isinstance(altered, dict) or not all(
        validate.printable(k) and isinstance(v, int) and not isinstance(v, bool) for k, v in altered.items()
    ):
        raise invalid("alter_amount", f"'alter_amount' must map references to integer amounts, got {altered!r}.")
    unknown = body.get("unknown", 0)
    if isinstance(unknown, bool) or not isinstance(unknown, int) or not 0 <= unknown <= MAX_UNKNOWN:
        raise invalid("unknown", f"'unknown' must be an integer in 0..{MAX_UNKNOWN}, got {unknown!r}.")
    return {"omit": _refs(body, "omit"), "alter_amount": altered, "duplicate": _refs(body, "duplicate"),
            "unknown": unknown}  # fmt: skip


async def settlement_faults(request: Request) -> Response:
    """Make the settlement file of ``date`` lie; replaces what was set for that date before."""
    _loopback(request)
    body = await read_json(request)
    text = body.get("date")
    try:
        day = parse_day(text) if isinstance(text, str) else parse_day("")
    except ValueError:
        raise invalid("date", f"'date' must be YYYY-MM-DD, got {text!r}.") from None
    lies = _lies(body)
    await sim_of(request).pool.execute(
        "INSERT INTO settlement_faults (day, body) VALUES ($1, $2::jsonb) "
        "ON CONFLICT (day) DO UPDATE SET body = $2::jsonb",
        day, orjson.dumps(lies).decode(),
    )  # fmt: skip
    return json(200, {"date": text, **lies})


ROUTES = [
    Route("/sim/faults", get_faults, methods=["GET"]),
    Route("/sim/faults", put_faults, methods=["PUT"]),
    Route("/sim/records", records, methods=["GET"]),
    Route("/sim/stats", stats, methods=["GET"]),
    Route("/sim/events", list_events, methods=["GET"]),
    Route("/sim/reset", reset, methods=["POST"]),
    Route("/sim/settlement-faults", settlement_faults, methods=["POST"]),
]
