"""Subcommands of ``shardpay``; each module registers its own."""

from __future__ import annotations

from typing import Any

from shardpay.commands import drill, events, ha, keys, ledger, merchants, ops, payments, psp, reconcile


def register(sub: Any) -> None:
    for module in (ops, merchants, keys, ledger, events, psp, payments, reconcile, ha, drill):
        module.register(sub)
