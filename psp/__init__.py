"""shardpay's side of the payment service provider: one interface (``psp.base``), one module per PSP.

``connect(settings)`` imports ``psp.<SHARDPAY_PSP_ADAPTER>`` and calls its ``create(settings)``: a second PSP is
a new module and a setting, nothing else.
"""

from __future__ import annotations

import importlib
import re

from psp.base import (
    Charge,
    Dispute,
    HostedSession,
    InvalidSignature,
    PaymentMethod,
    Payout,
    Psp,
    PspError,
    PspMalformed,
    PspOutcomeUnknown,
    PspRejected,
    PspUnavailable,
    Refund,
    SessionCompleted,
    WebhookEvent,
)  # fmt: skip
from shardpay.config import ConfigError, Settings

__all__ = [
    "Charge", "Dispute", "HostedSession", "InvalidSignature", "PaymentMethod", "Payout", "Psp", "PspError",
    "PspMalformed", "PspOutcomeUnknown", "PspRejected", "PspUnavailable", "Refund", "SessionCompleted", "WebhookEvent",
    "connect",
]  # fmt: skip

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def connect(settings: Settings) -> Psp:
    """The adapter ``SHARDPAY_PSP_ADAPTER`` names, ready to call; ``aclose()`` it when done."""
    name = settings.psp_adapter
    if not _NAME.match(name) or name == "base":
        raise ConfigError(f"Config 'SHARDPAY_PSP_ADAPTER' has value '{name}'. Not an adapter module name.")
    try:
        module = importlib.import_module(f"psp.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"psp.{name}":
            raise  # the adapter exists but something it imports does not: that is its own error
        raise ConfigError(f"Config 'SHARDPAY_PSP_ADAPTER' has value '{name}'. No module psp/{name}.py.") from None
    adapter: Psp = module.create(settings)
    return adapter
