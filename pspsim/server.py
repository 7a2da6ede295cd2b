"""``shardpay psp-sim``: one uvicorn process (uvloop, httptools with resettable connections)."""

from __future__ import annotations

import uvicorn

from pspsim.app import create_app
from pspsim.protocol import ResettableHttpToolsProtocol
from shardpay.config import Settings


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM. One process: the faults and stats it holds are this process's."""
    config = uvicorn.Config(
        create_app(settings), host=settings.psp_host, port=settings.psp_port, loop="uvloop",
        http=ResettableHttpToolsProtocol, access_log=False, lifespan="on", timeout_graceful_shutdown=5,
        proxy_headers=False,
    )  # fmt: skip
    uvicorn.Server(config).run()
