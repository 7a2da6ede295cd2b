"""Draining: a gateway behind a load balancer leaves it before it stops.

With ``SHARDPAY_DRAIN_SECONDS`` > 0, the first SIGTERM (or Ctrl-C) does not stop uvicorn at once: ``/readyz``
answers 503 with status ``draining`` while every request, new ones included, is still served, so the balancer's
health check takes the instance out; after the drain period uvicorn shuts down as usual (no new connections,
requests in flight finished). A second signal stops at once. One process per instance (``SHARDPAY_WORKERS=1``):
uvicorn's worker processes take their signals from their parent.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import uvicorn

_draining = threading.Event()


def draining() -> bool:
    """True once this process was asked to stop and is waiting out its drain period."""
    return _draining.is_set()


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self._drain_seconds = drain_seconds
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if _draining.is_set() or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        _draining.set()
        # uvicorn's main loop polls should_exit every 0.1 s; the timer only sets it (a signal-safe flag).
        self._timer = threading.Timer(self._drain_seconds, super().handle_exit, (sig, frame))
        self._timer.daemon = True
        self._timer.start()
