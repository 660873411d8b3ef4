"""Event contracts: what travels on the streams, as versioned msgspec Structs.

Every event is one envelope (``id``, ``type``, ``version``, ``occurred_at``, ``producer``,
``request_id``, ``traceparent``, ``tracestate``, ``payload``); the ``type`` member is the
msgspec tag, so one module-level decoder (:data:`event_decoder`) turns any entry back into the
right class::

    event = FileUploaded(producer="storage", payload=FileUploadedPayload(file_id=..., ...))
    decode_event(b'{"type": "file.uploaded", ...}')  # -> FileUploaded

The rule that keeps producers and consumers deployable on their own: **add fields with
defaults, never retype or remove one.** Old consumers ignore fields they do not know; new
consumers read old events through the defaults. A change that cannot follow the rule is a new
event type (``file.uploaded.v2`` style name) or a bumped ``version`` that consumers branch on.

Each event belongs to the stream of the domain that produces it (``users``, ``files``,
``documents``); the stream key is ``<prefix>:<domain>``, see :func:`stream_key`. A type that
this module does not know is not an error to crash on: consumers dead-letter it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID, uuid4

import msgspec

from xtyl_common.context import current_request_id
from xtyl_common.tracing import current_carrier

USERS = "users"
FILES = "files"
DOCUMENTS = "documents"
DOMAINS: tuple[str, ...] = (USERS, FILES, DOCUMENTS)

DEFAULT_STREAM_PREFIX = "xtyl:events"
DEAD_LETTER_SUFFIX = ":dead"


def _now() -> datetime:
    return datetime.now(UTC)


def _current_trace(header: str) -> str | None:
    """``traceparent`` or ``tracestate`` of the current trace context (``None`` untraced)."""
    return current_carrier().get(header)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """The envelope every event shares. Subclasses set ``tag`` (the type), ``domain`` and
    ``payload``."""

    #: The stream (domain) this event type is published on.
    domain: ClassVar[str]

    producer: str
    id: UUID = msgspec.field(default_factory=uuid4)
    occurred_at: datetime = msgspec.field(default_factory=_now)
    #: The request that caused the event (taken from the current context by default).
    request_id: str | None = msgspec.field(default_factory=current_request_id)
    #: Schema version of the payload; bumped only when consumers must branch on it.
    version: int = 1
    #: The W3C trace context of the code that made the event (taken from the current context
    #: by default; ``None`` when nothing is traced): the worker's handler span continues it.
    traceparent: str | None = msgspec.field(default_factory=lambda: _current_trace("traceparent"))
    tracestate: str | None = msgspec.field(default_factory=lambda: _current_trace("tracestate"))

    @property
    def type(self) -> str:
        return type_of(type(self))


# --- users --------------------------------------------------------------------------------


class UserCreatedPayload(msgspec.Struct, frozen=True, kw_only=True):
    user_id: UUID
    #: ``None`` for sign-ups without an email (phone); consumers that need one skip those.
    email: str | None = None
    full_name: str | None = None


class UserCreated(Event, frozen=True, kw_only=True, tag="user.created"):
    domain: ClassVar[str] = USERS
    payload: UserCreatedPayload


class UserUpdatedPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The user's address or name after a change in Supabase Auth (both, whichever changed)."""

    user_id: UUID
    email: str | None = None
    full_name: str | None = None


class UserUpdated(Event, frozen=True, kw_only=True, tag="user.updated"):
    domain: ClassVar[str] = USERS
    payload: UserUpdatedPayload


class UserDeletedPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The user is gone from ``auth.users``: every service erases what it holds for them
    (GDPR Art. 17) and records when it finished (:mod:`xtyl_common.erasure`)."""

    user_id: UUID


class UserDeleted(Event, frozen=True, kw_only=True, tag="user.deleted"):
    domain: ClassVar[str] = USERS
    payload: UserDeletedPayload


# --- files --------------------------------------------------------------------------------


class FileUploadedPayload(msgspec.Struct, frozen=True, kw_only=True):
    file_id: UUID
    owner_id: UUID
    key: str
    name: str
    content_type: str
    size: int
    sha256: str


class FileUploaded(Event, frozen=True, kw_only=True, tag="file.uploaded"):
    domain: ClassVar[str] = FILES
    payload: FileUploadedPayload


class FileDeletedPayload(msgspec.Struct, frozen=True, kw_only=True):
    file_id: UUID
    owner_id: UUID


class FileDeleted(Event, frozen=True, kw_only=True, tag="file.deleted"):
    domain: ClassVar[str] = FILES
    payload: FileDeletedPayload


# --- documents ----------------------------------------------------------------------------


class DocumentIndexedPayload(msgspec.Struct, frozen=True, kw_only=True):
    document_id: UUID
    owner_id: UUID
    title: str
    chunk_count: int
    file_id: UUID | None = None


class DocumentIndexed(Event, frozen=True, kw_only=True, tag="document.indexed"):
    domain: ClassVar[str] = DOCUMENTS
    payload: DocumentIndexedPayload


class DocumentFailedPayload(msgspec.Struct, frozen=True, kw_only=True):
    document_id: UUID
    owner_id: UUID
    reason: str
    file_id: UUID | None = None


class DocumentFailed(Event, frozen=True, kw_only=True, tag="document.failed"):
    domain: ClassVar[str] = DOCUMENTS
    payload: DocumentFailedPayload


# --- the registry and the one decoder -----------------------------------------------------

AnyEvent = (
    UserCreated
    | UserUpdated
    | UserDeleted
    | FileUploaded
    | FileDeleted
    | DocumentIndexed
    | DocumentFailed
)

EVENT_CLASSES: tuple[type[Event], ...] = (
    UserCreated,
    UserUpdated,
    UserDeleted,
    FileUploaded,
    FileDeleted,
    DocumentIndexed,
    DocumentFailed,
)


def type_of(cls: type[Event]) -> str:
    """The wire ``type`` of an event class, e.g. ``"file.uploaded"``."""
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__} has no string tag")
    return tag


#: ``"file.uploaded"`` -> :class:`FileUploaded`, for every type this build knows.
EVENT_TYPES: dict[str, type[Event]] = {type_of(cls): cls for cls in EVENT_CLASSES}

#: Decodes any known event from JSON; reuse it, do not build decoders per call.
event_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
event_encoder = msgspec.json.Encoder()


class UnknownEventType(ValueError):
    """The entry names a type this build does not know (dead-letter it, do not crash)."""


class InvalidEvent(ValueError):
    """The entry is a known type but its body does not match the contract."""


def decode_event(data: bytes | str) -> AnyEvent:
    """The event in ``data``; :class:`UnknownEventType` or :class:`InvalidEvent` if it is not
    one this build can handle."""
    try:
        return event_decoder.decode(data)
    except msgspec.ValidationError as exc:
        if "at `$.type`" in str(exc):
            raise UnknownEventType(str(exc)) from None
        raise InvalidEvent(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(str(exc)) from None


def encode_event(event: Event) -> bytes:
    return event_encoder.encode(event)


def domain_of(event_type: str) -> str:
    """The domain (stream) of a known event type; :class:`UnknownEventType` otherwise."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventType(f"unknown event type {event_type!r}")
    return cls.domain


def stream_key(domain: str, prefix: str = DEFAULT_STREAM_PREFIX) -> str:
    """``xtyl:events:files`` for ``files`` with the default prefix."""
    return f"{prefix}:{domain}"


def dead_letter_key(stream: str) -> str:
    """The dead-letter stream of a stream: ``<stream>:dead``."""
    return stream + DEAD_LETTER_SUFFIX
