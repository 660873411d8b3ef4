"""Tracing with OpenTelemetry: off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; then spans go out over OTLP/HTTP, configured by
the standard ``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_HEADERS``...).

One trace follows a request through every process: the maintained instrumentations make the
spans (ASGI server through Litestar's plugin, asyncpg, aiohttp client, redis) and carry the W3C
``traceparent`` over HTTP; across the event backbone the trace context travels in the event
envelope (:func:`current_carrier` when the outbox row is written, :func:`context_of` when the
worker handles the entry). Every log line carries ``trace_id`` and ``span_id`` while a span is
current (:func:`add_trace_ids`, a structlog processor).

Disabled, nothing is instrumented and the API's no-op tracer costs next to nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: The standard variables a deployment passes to every process (compose lists them; in
#: Kubernetes they go in the ConfigMap, or the Secret for headers holding a key). Not
#: ``OTEL_SERVICE_NAME`` (each process names itself) nor the traces-only endpoint (set empty,
#: it would win over the base one).
DEPLOYMENT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)
#: Never traced: probes and scrapes.
UNTRACED_PATHS = ["/livez", "/readyz", "/metrics"]

_lock = threading.Lock()
#: the service name tracing was configured for in this process
_configured: list[str] = []


def tracing_enabled() -> bool:
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def configure_tracing(service_name: str, *, exporter: SpanExporter | None = None) -> bool:
    """Set this process's tracer provider and instrument asyncpg, aiohttp and redis, once.
    ``exporter`` replaces OTLP (tests); returns whether tracing is on."""
    if exporter is None and not tracing_enabled():
        return False
    with _lock:
        if _configured:
            return True
        name = os.environ.get("OTEL_SERVICE_NAME") or service_name
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _instrument_clients()
        _configured.append(name)
    return True


def _instrument_clients() -> None:
    AsyncPGInstrumentor().instrument()  # pyright: ignore[reportUnknownMemberType]
    AioHttpClientInstrumentor().instrument()  # pyright: ignore[reportUnknownMemberType]
    RedisInstrumentor().instrument()  # pyright: ignore[reportUnknownMemberType]


def shutdown_tracing() -> None:
    """Send the spans still buffered (at process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis=5_000)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``): what an
    event envelope carries. Empty when nothing is traced."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_of(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context an envelope carried (the current one when it carried none)."""
    if not carrier:
        return otel_context.get_current()
    return propagate.extract(dict(carrier))


def add_trace_ids(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span, if any."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
    return event_dict
