"""An OTLP/HTTP traces receiver of the tests' own: what every process exported, decoded, by service and trace."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    trace_id: str
    links: tuple[str, ...]  # the trace ids it links to


@dataclass
class OtlpReceiver:
    spans: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def in_trace(self, trace_id: str) -> list[Received]:
        return [s for s in self.spans if s.trace_id == trace_id or trace_id in s.links]

    async def wait_for(self, trace_id: str, services: set[str], within: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + within
        while not services <= {s.service for s in self.in_trace(trace_id)}:
            seen = {s.service for s in self.in_trace(trace_id)}
            assert time.monotonic() < deadline, f"trace {trace_id}: spans from {seen}, not {services}"
            await asyncio.sleep(0.1)
        return self.in_trace(trace_id)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while not reader.at_eof():
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
                self._take(await reader.readexactly(int(headers.get("content-length", "0"))))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    def _take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    links = tuple(link.trace_id.hex() for link in span.links)
                    self.spans.append(Received(attributes.get("service.name", "?"), span.name, span.trace_id.hex(),
                                               links))  # fmt: skip
