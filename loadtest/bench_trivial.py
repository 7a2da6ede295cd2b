"""The HTTP layer alone, for ``python -m loadtest.bench --ceiling``: uvicorn (uvloop, httptools) + Starlette +
orjson, as the gateway runs them, with a POST handler that parses the JSON body and answers a small 201 at once.

No authentication, Redis, PostgreSQL or events: what this machine's cores can do for HTTP and nothing else,
the ceiling any gateway built on this stack stays under. It echoes X-Request-Id like the gateway does, so the
Lua latency path runs as in a real benchmark.

    python -m uvicorn loadtest.bench_trivial:app --workers W ...
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def create_transfer(request: Request) -> Response:
    body = orjson.loads(await request.body())
    obj = {"id": "tr_0000000000000000000000000000", "object": "transfer", "amount": body.get("amount")}
    return Response(
        orjson.dumps(obj), status_code=201, media_type="application/json",
        headers={"x-request-id": request.headers.get("x-request-id", "")},
    )  # fmt: skip


app = Starlette(routes=[Route("/v1/transfers", create_transfer, methods=["POST"])])
