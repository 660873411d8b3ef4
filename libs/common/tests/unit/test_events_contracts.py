"""Event contracts: one decoder, tagged types, forward-compatible decoding, unknown types."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from xtyl_common.context import set_request_id
from xtyl_common.events.contracts import (
    DOMAINS,
    EVENT_TYPES,
    DocumentIndexed,
    DocumentIndexedPayload,
    FileUploaded,
    FileUploadedPayload,
    InvalidEvent,
    UnknownEventType,
    UserCreated,
    UserCreatedPayload,
    dead_letter_key,
    decode_event,
    domain_of,
    encode_event,
    stream_key,
)


def _file_uploaded() -> FileUploaded:
    return FileUploaded(
        producer="storage",
        payload=FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="u/1/report.pdf",
            name="report.pdf",
            content_type="application/pdf",
            size=1234,
            sha256="ab" * 32,
        ),
    )


def test_an_event_survives_the_wire_as_its_own_class() -> None:
    event = _file_uploaded()

    decoded = decode_event(encode_event(event))

    assert isinstance(decoded, FileUploaded)
    assert decoded == event
    assert decoded.type == "file.uploaded"


def test_the_wire_form_is_one_envelope_tagged_by_type() -> None:
    wire = msgspec.json.decode(encode_event(_file_uploaded()))

    assert set(wire) == {
        "type", "id", "occurred_at", "producer", "request_id", "version", "traceparent",
        "tracestate", "payload",
    }  # fmt: skip
    assert wire["type"] == "file.uploaded"
    assert wire["version"] == 1


def test_the_seven_types_are_defined_on_their_domain_streams() -> None:
    assert {t: cls.domain for t, cls in EVENT_TYPES.items()} == {
        "user.created": "users",
        "user.updated": "users",
        "user.deleted": "users",
        "file.uploaded": "files",
        "file.deleted": "files",
        "document.indexed": "documents",
        "document.failed": "documents",
    }
    assert set(DOMAINS) == {"users", "files", "documents"}
    assert domain_of("document.failed") == "documents"


def test_stream_names_follow_the_prefix() -> None:
    assert stream_key("files") == "xtyl:events:files"
    assert stream_key("users", "test:abc:events") == "test:abc:events:users"
    assert dead_letter_key("xtyl:events:files") == "xtyl:events:files:dead"


def test_an_unknown_type_is_reported_as_such_not_crashed_on() -> None:
    body = b'{"type": "invoice.paid", "producer": "billing", "payload": {}}'

    with pytest.raises(UnknownEventType):
        decode_event(body)
    with pytest.raises(UnknownEventType):
        domain_of("invoice.paid")


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "user.created", "producer": "gateway"}',
        b'{"type": "user.created", "producer": "gateway", "payload": {"user_id": "nope"}}',
        b"not json",
    ],
)
def test_a_known_type_with_a_bad_body_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(body)


def test_newer_producers_fields_are_ignored_and_missing_ones_defaulted() -> None:
    user_id = uuid.uuid4()
    body = msgspec.json.encode(
        {
            "type": "user.created",
            "id": str(uuid.uuid4()),
            "producer": "gateway",
            "occurred_at": "2025-01-01T00:00:00Z",
            "added_later": True,
            "payload": {"user_id": str(user_id), "locale": "fr"},
        }
    )

    event = decode_event(body)

    assert isinstance(event, UserCreated)
    assert event.payload == UserCreatedPayload(user_id=user_id)
    assert event.request_id is None
    assert event.version == 1
    assert (event.traceparent, event.tracestate) == (None, None)  # made before tracing


def test_the_request_id_of_the_current_request_is_recorded() -> None:
    set_request_id("req-42")
    try:
        event = DocumentIndexed(
            producer="rag",
            payload=DocumentIndexedPayload(
                document_id=uuid.uuid4(), owner_id=uuid.uuid4(), title="t", chunk_count=3
            ),
        )
    finally:
        set_request_id(None)

    assert event.request_id == "req-42"
    assert event.payload.file_id is None


TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


def test_the_trace_context_of_the_current_span_is_recorded() -> None:
    # a span context of its own (what a request's span would be): no tracer provider needed
    span = NonRecordingSpan(
        SpanContext(
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "opaque")]),
        )
    )
    with trace.use_span(span):
        event = _file_uploaded()
    untraced = _file_uploaded()

    assert event.traceparent == f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
    assert event.tracestate == "vendor=opaque"
    assert decode_event(encode_event(event)) == event  # it travels in the envelope
    assert (untraced.traceparent, untraced.tracestate) == (None, None)
