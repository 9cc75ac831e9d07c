"""W3C trace context carried in the CloudEvent ``traceparent`` extension, continued as OTel spans."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from agentos_schemas import Event
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

if TYPE_CHECKING:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_configured = False
_exporting = False
_ids = RandomIdGenerator()


@functools.cache
def _propagator() -> TraceContextTextMapPropagator:
    """The W3C propagator, built on first use: its module costs ~30 ms to import, which a CLI
    command that only asks over request/reply never needs."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def setup(service: str) -> None:
    """Install an SDK tracer provider once per process (OTLP export when an endpoint is set)."""
    global _configured, _exporting
    if _configured:
        return
    _configured = True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": f"agentos-{service}"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # pyright: ignore[reportMissingImports]  (optional: not installed unless OTLP export is wanted)
                OTLPSpanExporter,
            )
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _exporting = True
        except ImportError:
            pass
    trace.set_tracer_provider(provider)
    tracer.cache_clear()


@functools.cache
def tracer() -> trace.Tracer:
    return trace.get_tracer("agentos")


def current_traceparent() -> tuple[str | None, str | None]:
    """(traceparent, tracestate) of the active span, for a new event."""
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def exporting() -> bool:
    """Whether spans are recorded and exported (``OTEL_EXPORTER_OTLP_ENDPOINT`` set at setup)."""
    return _exporting


def root_traceparent(name: str) -> tuple[str, str | None]:
    """A traceparent for an event that starts a new trace.

    When spans are exported, a real root span named ``name`` is recorded so the trace has a
    visible start; otherwise fresh W3C ids are minted directly, which costs no span."""
    if _exporting:
        with tracer().start_as_current_span(name):
            parent, state = current_traceparent()
        assert parent is not None
        return parent, state
    return f"00-{_ids.generate_trace_id():032x}-{_ids.generate_span_id():016x}-01", None


def trace_id(traceparent: str | None) -> str | None:
    """The 32-hex trace id inside a ``traceparent``."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None


@contextmanager
def consume_span(event: Event[Any], consumer: str) -> Iterator[trace.Span]:
    """A ``process`` span whose parent is the span that published ``event``."""
    carrier = {"traceparent": event.traceparent or "", "tracestate": event.tracestate or ""}
    parent = _propagator().extract(carrier)
    if not _exporting:
        # Nothing records spans: give the handler a span id of its own in the producer's trace
        # (so what it publishes is a child hop), without building an SDK span that goes nowhere.
        up = trace.get_current_span(parent).get_span_context()
        own = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=up.trace_id if up.is_valid else _ids.generate_trace_id(),
                span_id=_ids.generate_span_id(),
                is_remote=False,
                trace_flags=up.trace_flags if up.is_valid else trace.TraceFlags(trace.TraceFlags.SAMPLED),
                trace_state=up.trace_state if up.is_valid else None,
            )
        )
        token = otel_context.attach(trace.set_span_in_context(own, parent))
        try:
            yield own
        finally:
            otel_context.detach(token)
        return
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(
            f"process {event.type}",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": consumer,
                "messaging.message.id": event.id,
                "cloudevents.event_type": event.type,
                "agentos.correlation_id": event.correlationid or "",
            },
        ) as span:
            yield span
    finally:
        otel_context.detach(token)
