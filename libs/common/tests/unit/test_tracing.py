"""Log lines carry the current span's ids; the trace context crosses an event envelope."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from xtyl_common.tracing import add_trace_ids, context_of, current_carrier

TRACER = TracerProvider().get_tracer("test")


def test_a_log_line_carries_the_current_span_s_ids() -> None:
    assert add_trace_ids(None, "info", {"event": "outside"}) == {"event": "outside"}
    with TRACER.start_as_current_span("work") as span:
        line = add_trace_ids(None, "info", {"event": "inside"})
        ids = span.get_span_context()
    assert line["trace_id"] == format(ids.trace_id, "032x")
    assert line["span_id"] == format(ids.span_id, "016x")


def test_the_trace_context_crosses_an_envelope() -> None:
    assert current_carrier() == {}
    with TRACER.start_as_current_span("publish") as publisher:
        carrier = current_carrier()
    assert carrier["traceparent"].split("-")[1] == format(
        publisher.get_span_context().trace_id, "032x"
    )
    with TRACER.start_as_current_span("handle", context=context_of(carrier)) as handler:
        assert handler.get_span_context().trace_id == publisher.get_span_context().trace_id
        assert isinstance(handler, ReadableSpan)
        assert handler.parent is not None
        assert handler.parent.span_id == publisher.get_span_context().span_id
    assert trace.get_current_span().get_span_context().is_valid is False
