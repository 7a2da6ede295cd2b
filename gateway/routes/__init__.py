"""The route table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import guard, http

Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, endpoint: Endpoint | guard.WriteEndpoint, method: str) -> Route:
    """A route that labels its requests with its path template, for logs and metrics."""
    if isinstance(endpoint, guard.WriteEndpoint):
        return Route(path, endpoint.at(path), methods=[method], name=f"{method} {path}")

    async def labelled(request: Request) -> Response:
        request.scope[http.ROUTE] = path
        return await endpoint(request)

    return Route(path, labelled, methods=[method], name=f"{method} {path}")


def routes() -> list[Route]:
    from gateway.routes import ops, payments, payouts, transfers, wallets, webhooks

    # Matched in order: the busiest route first.
    return [*transfers.ROUTES, *wallets.ROUTES, *payments.ROUTES, *webhooks.ROUTES, *payouts.ROUTES, *ops.ROUTES]
