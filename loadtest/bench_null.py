"""A null gateway for ``python -m loadtest.bench --selftest``: answers every request at once with a canned 201.

It shows what the load generator itself can do (wrk with the real Lua script, on one core) with no shardpay
behind it. uvloop + httptools, one process; it echoes X-Request-Id like the gateway does, so the Lua latency
path runs as in a real benchmark. Listens on 127.0.0.1 only.

    python -m loadtest.bench_null PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import httptools
import uvloop

BODY = b'{"id":"tr_0000000000000000000000000000","object":"transfer","status":"succeeded"}'


class NullProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's TCPTransport
        self.parser = httptools.HttpRequestParser(self)
        self.request_id = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-request-id":
            self.request_id = value

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        self.transport.write(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(BODY)).encode()
            + b"\r\nx-request-id: "
            + self.request_id
            + b"\r\n\r\n"
            + BODY
        )
        self.request_id = b""


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(NullProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
