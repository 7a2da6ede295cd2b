"""``shardpay ha up`` (the HA topology until Ctrl-C: ``make run-ha``), ``shardpay ha status`` and
``shardpay ha env`` (the settings that point any ``shardpay`` command at it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shardpay.commands.base import CliError, add
from shardpay.config import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("ha", help="the high-availability topology on this machine (make run-ha)")
    ha = parser.add_subparsers(dest="ha_command", required=True)
    up = add(ha, "up", _up, "start every server and shardpay process of the HA topology; Ctrl-C stops them all")
    up.add_argument("--topology", help="a topology.json to run instead of the standard one (the tests' small one)")
    add(ha, "status", _status, "each server's process and each Patroni cluster's members, as JSON")
    add(ha, "env", _env, "the SHARDPAY_* settings of the running topology, as shell assignments")


async def _up(args: argparse.Namespace, settings: Settings) -> None:
    from shardpay.ha import layout, runner
    from shardpay.ha.procs import StartFailed

    given = None if args.topology is None else Path(args.topology)
    topology = layout.from_env() if given is None else layout.Topology.from_json(given.read_bytes())
    try:
        await runner.run(topology)
    except StartFailed as exc:
        raise CliError(str(exc)) from None


async def _status(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shardpay.ha import control, layout, servers

    topology = layout.load()
    try:
        processes = await control.call(topology.control_socket, op="status")
    except ConnectionError as exc:
        raise CliError(str(exc)) from None
    clusters = {c.name: servers.roles(await servers.cluster_state(c)) for c in topology.clusters}
    return {
        "root": topology.root, "gateway": topology.gateway_url, "servers": processes["servers"], "clusters": clusters,
    }  # fmt: skip


def _env(args: argparse.Namespace, settings: Settings) -> None:
    import shlex

    from shardpay.ha import layout
    from shardpay.ha.wiring import shardpay_env

    for name, value in sorted(shardpay_env(layout.load()).items()):
        print(f"export {name}={shlex.quote(value)}")
