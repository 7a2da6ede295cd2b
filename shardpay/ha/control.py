"""The runner's control socket (``run/control.sock``): how a drill kills a server and starts it again while the
runner stays the owner of every process it started (and so stops them all on Ctrl-C).

One JSON object per line each way. Requests: ``{"op": "status"}``, ``{"op": "signal", "name": N, "signal": 9}``,
``{"op": "stop", "name": N}``, ``{"op": "start", "name": N}``; answers ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from shardpay.ha.layout import Topology
from shardpay.ha.procs import Server, StartFailed


class ControlServer:
    def __init__(self, topology: Topology, by_name: dict[str, Server]) -> None:
        self._path = topology.control_socket
        self._servers = by_name
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ControlServer:
        self._path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._client, path=str(self._path))
        self._path.chmod(0o600)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        self._path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(orjson.dumps(await self._answer(line)) + b"\n")
                await writer.drain()
        except (ConnectionError, orjson.JSONDecodeError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        request = orjson.loads(line)
        op = request.get("op")
        if op == "status":
            return {"ok": True, "servers": {n: {"pid": s.pid, "running": s.running} for n, s in self._servers.items()}}
        server = self._servers.get(request.get("name", ""))
        if server is None:
            return {"ok": False, "error": f"no server named {request.get('name')!r}; known: {sorted(self._servers)}"}
        try:
            return await self._act(op, server, request)
        except StartFailed as exc:
            return {"ok": False, "error": str(exc)}

    async def _act(self, op: str, server: Server, request: dict[str, Any]) -> dict[str, Any]:
        if op == "signal":
            signum = int(request.get("signal", signal.SIGKILL))
            pid = server.pid
            return {"ok": server.signal(signum), "pid": pid}
        if op == "stop":
            await server.stop()
            return {"ok": True}
        if op == "start":
            await server.start(within=float(request.get("within", 120)))
            return {"ok": True, "pid": server.pid}
        return {"ok": False, "error": f"unknown op {op!r}"}


async def call(socket: Path, **request: Any) -> dict[str, Any]:
    """Send one request to a running ``shardpay ha up`` and return its answer."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket))
    except OSError as exc:
        raise ConnectionError(f"no HA runner answers on {socket}: {exc}") from None
    try:
        writer.write(orjson.dumps(request) + b"\n")
        await writer.drain()
        answer: dict[str, Any] = orjson.loads(await reader.readline())
        return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
