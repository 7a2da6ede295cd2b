"""A real TCP reset for ``reset_rate``: uvicorn's httptools protocol, with its transport in each request's scope.

uvicorn gives an ASGI app no way to reset a connection, only to close it (a FIN). A PSP that fails this way
sends an RST before any answer, and the caller sees "connection reset by peer"; so this subclass puts the
transport where ``reset`` can reach it, and ``reset`` sets SO_LINGER to 0 and aborts, which makes the kernel
send the RST.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from starlette.types import Receive, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TRANSPORT = "pspsim.transport"


class ResettableHttpToolsProtocol(HttpToolsProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[TRANSPORT] = self.transport  # type: ignore[literal-required]


async def reset(scope: Scope, receive: Receive) -> None:
    """Reset the caller's connection now, answering nothing; returns once the server has seen it go."""
    transport: asyncio.Transport = scope[TRANSPORT]
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Wait for uvicorn to notice the connection is gone, so it does not try to answer it with a 500.
    while (await receive())["type"] != "http.disconnect":
        pass
