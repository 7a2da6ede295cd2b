"""uvicorn's HTTP protocol, with the two limits a server facing the internet needs and uvicorn lacks.

- A header deadline: uvicorn times out idle keep-alive connections, but a connection that opens and sends its
  request line and headers a byte at a time (slow-loris) is held for ever. Here the headers of every request
  must be complete within ``SHARDPAY_HEADER_TIMEOUT`` seconds of its first byte (or of the connection, for the
  first request); past it the connection gets a 408 and is closed.
- A connection cap per worker (``SHARDPAY_MAX_CONNECTIONS``): past it a new connection is closed at once,
  before it costs a parser or a task. (The cap on requests in flight is ``gateway.middleware``'s, which can
  answer in JSON.)

The body's own deadline is the guard's (``gateway.body``), since only the application reads bodies.
uvicorn is given this class by its import path (``HTTP_PROTOCOL``), so that worker processes import it too.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shardpay.config import Settings
from shardpay.domain.errors import ApiError

HTTP_PROTOCOL = "gateway.server:GatewayProtocol"


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


def _timeout_response(seconds: float) -> bytes:
    message = f"The request headers did not arrive within {seconds:g} s."
    body = orjson.dumps(ApiError(408, "invalid_request_error", "request_timeout", message).body(""))
    head = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


class GatewayProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self._header_timeout = settings.header_timeout
        self._max_connections = settings.max_connections
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_timeout_response(self._header_timeout))
            self.transport.close()
