"""The simulator's ASGI app: the call layer around the /v1 calls, the hosted page and /sim; the webhook sender
and the timers run beside it for the app's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from pspsim import admin, hosted, routes, timers
from pspsim.calls import CallLayer
from pspsim.db import migrate, open_pool
from pspsim.http import SimError, request_id
from pspsim.sender import Sender
from pspsim.state import Sim
from shardpay.config import Settings


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "resource_missing" if exc.status_code == 404 else "method_not_allowed"
    message = f"{request.method} {request.url.path}: {exc.detail}."
    error = SimError(exc.status_code, "invalid_request_error", code, message, None, dict(exc.headers or {}))
    return error.response(request_id(request))


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await migrate(settings.psp_dsn)
        pool = await open_pool(settings.psp_dsn, settings.db_timeout)
        sim = app.state.sim = Sim(settings, pool)
        await sim.load_faults()
        workers = [asyncio.create_task(Sender(sim).run()), asyncio.create_task(timers.run(sim))]
        try:
            yield
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await pool.close()

    return Starlette(
        routes=[*routes.ROUTES, *hosted.ROUTES, *admin.ROUTES],
        middleware=[Middleware(CallLayer)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
