"""The ``shardpay`` command. Every subcommand prints JSON on stdout; errors go to stderr with a non-zero exit."""

from __future__ import annotations

import argparse
import inspect
import sys

import orjson
import uvloop

from shardpay import commands
from shardpay.commands.base import CliError, Handler
from shardpay.config import ConfigError, Settings
from shardpay.domain.errors import ApiError
from shards.errors import TRANSIENT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardpay", description="shardpay operations")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.register(sub)
    return parser


def _fail(message: str) -> None:
    sys.stderr.write(orjson.dumps({"error": message}).decode() + "\n")
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        handler: Handler = args.handler
        result = handler(args, settings)
        if inspect.iscoroutine(result):
            result = uvloop.run(result)
    except (CliError, ConfigError) as exc:
        _fail(str(exc))
    except ApiError as exc:
        _fail(exc.message)
    except TRANSIENT as exc:
        _fail(f"a database is unreachable: {exc.__class__.__name__}: {exc}")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if result is not None:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    if isinstance(result, dict) and result.get("ok") is False:
        raise SystemExit(1)
