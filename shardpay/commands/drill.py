"""``shardpay drill NAME|all``: a failover drill against the running HA topology (``make run-ha``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from shardpay.commands.base import CliError, add
from shardpay.config import ConfigError, Settings


def register(sub: Any) -> None:
    from shardpay.drills.faults import FAULTS

    names = ", ".join(FAULTS)
    parser = add(sub, "drill", _drill, f"run a failover drill against `make run-ha` and report it: all, {names}")
    parser.add_argument("name", choices=["all", *FAULTS], metavar="NAME", help=f"all, or one of: {names}")
    parser.add_argument("--shard", type=int, default=0, help="the shard a shard drill hits (default 0)")


async def _drill(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    from shardpay.drills import runner
    from shardpay.drills.faults import FAULTS, FaultError
    from shardpay.ha import layout

    try:
        topology = layout.load()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if not 0 <= args.shard < topology.shards:
        raise CliError(f"--shard must be 0..{topology.shards - 1}, got {args.shard}")
    try:
        if args.name != "all":
            return await runner.run_drill(topology, FAULTS[args.name], args.shard)
        reports = await runner.run_all(topology, args.shard)
    except (FaultError, ConnectionError) as exc:
        raise CliError(str(exc)) from None
    path = topology.path("log", f"drills-{time.strftime('%Y%m%dT%H%M%S')}.json")
    path.write_bytes(orjson.dumps(reports, option=orjson.OPT_INDENT_2))
    sys.stdout.write(runner.table(reports) + f"\n\nreports: {path}\n")
    if not all(report["ok"] for report in reports):
        raise SystemExit(1)
    return None
