"""What every subcommand module shares."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from shardpay.config import Settings

# Long-running commands that own their event loop (``serve``) are plain functions; the rest are coroutines.
Handler = Callable[[argparse.Namespace, Settings], Awaitable[Any] | Any]


class CliError(Exception):
    """A user-facing failure: printed as ``{"error": message}`` on stderr with exit status 1."""


def add(sub: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser
