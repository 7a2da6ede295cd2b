"""OpenTelemetry traces, off unless ``SHARDPAY_OTLP_ENDPOINT`` names an OTLP/HTTP receiver.

One trace per request, followed across processes without storing anything: the trace id is made from the
request id (which every event, order, payout and refund already carries), and every span about that request,
in whichever process (the gateway, the relay, a consumer, an executor), is a child of the same synthetic root
made from it. So a transfer or a payment is one trace from its request to its webhooks, and the request id stays
the correlation id in logs and events (each log line of a request carries ``trace_id``). A caller's own
``traceparent`` header is kept as a link on the request's span. RabbitMQ messages carry their publish span's
context in their headers (W3C ``traceparent``), so a consumer's span also links to the relay's publish.

With tracing off, ``span`` costs one boolean test: no span objects, no context switches on the hot path.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_state: dict[str, Any] = {"tracer": None}


def enabled() -> bool:
    return _state["tracer"] is not None


def configure(endpoint: str | None, service: str) -> None:
    """Export this process's spans to ``endpoint`` (an OTLP/HTTP traces URL), as ``service``; None: off."""
    if not endpoint:
        _state["tracer"] = None
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _state["provider"] = provider
    _state["tracer"] = provider.get_tracer("shardpay")


def shutdown() -> None:
    """Flush what is buffered (at a clean stop)."""
    provider = _state.get("provider")
    if provider is not None:
        provider.shutdown()


def in_span() -> bool:
    """Whether a span is current (so a new one would be its child)."""
    return enabled() and trace.get_current_span().get_span_context().is_valid


def trace_id(request_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=16).digest(), "big") or 1


def trace_id_hex(request_id: str) -> str:
    return f"{trace_id(request_id):032x}"


def _root(request_id: str) -> context.Context:
    """The synthetic root every span of ``request_id`` hangs from, in any process."""
    span_id = int.from_bytes(hashlib.blake2b(b"root:" + request_id.encode(), digest_size=8).digest(), "big") or 1
    parent = SpanContext(trace_id(request_id), span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextlib.contextmanager
def span(
    name: str, request_id: str | None = None, kind: SpanKind = SpanKind.INTERNAL, links: Sequence[Link] = (),
    **attributes: Any,
) -> Iterator[Any]:  # fmt: skip
    """A span named ``name``: in ``request_id``'s trace if given, else a child of the current span (or a new trace).
    Yields the span (or None when tracing is off)."""
    tracer = _state["tracer"]
    if tracer is None:
        yield None
        return
    parent = _root(request_id) if request_id else None
    clean = {k: v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(name, context=parent, kind=kind, links=list(links), attributes=clean) as s:
        yield s


def inject(headers: MutableMapping[str, Any]) -> None:
    """Put the current span's context in ``headers`` (a RabbitMQ message's, say)."""
    if enabled():
        _PROPAGATOR.inject(headers)


def link_from(headers: Mapping[str, Any] | None) -> list[Link]:
    """A link to the span whose context ``headers`` carry (a ``traceparent``), if any."""
    if not enabled() or not headers or "traceparent" not in headers:
        return []
    carried = trace.get_current_span(_PROPAGATOR.extract({"traceparent": str(headers["traceparent"])}))
    span_context = carried.get_span_context()
    return [Link(span_context)] if span_context.is_valid else []


def record(name: str, request_id: str | None, start_ns: int, end_ns: int, links: Sequence[Link] = (),
           **attributes: Any) -> None:  # fmt: skip
    """A span that already happened (one event's share of a batch handled together), in ``request_id``'s trace."""
    tracer = _state["tracer"]
    if tracer is None:
        return
    parent = _root(request_id) if request_id else None
    clean = {k: v for k, v in attributes.items() if v is not None}
    tracer.start_span(name, context=parent, links=list(links), attributes=clean, start_time=start_ns).end(end_ns)


def link_to(request_id: str) -> Link:
    """A link to ``request_id``'s trace (for a span that serves many requests at once, as a relay's publish)."""
    return Link(trace.get_current_span(_root(request_id)).get_span_context())
