"""The event backbone: contracts, transactional outbox, relay, stream consumers in arq workers.

* :mod:`.contracts`: the versioned event Structs and the one decoder;
* :mod:`.outbox`: ``add_event(conn, event, schema=...)`` in the caller's transaction;
* :mod:`.relay`: ``OutboxRelay`` publishes outbox rows to Redis Streams;
* :mod:`.consumer` / :mod:`.scheduling` / :mod:`.handling`: ``StreamConsumer`` runs a consumer
  group's handlers (bounded, retried, dead-lettered, acknowledged after a done marker);
* :mod:`.worker`: ``stream_worker_settings`` for an arq worker hosting the consumer, run by
  ``run_stream_worker`` (an arq worker that outlives Redis outages); ``worker_entry`` gives a
  worker module its ``main`` and arq CLI's ``WorkerSettings``;
* :mod:`.retries`: what a failed handler's entry becomes (retried up to a horizon, or
  dead-lettered) and ``is_final_attempt(ctx)`` for handlers;
* :mod:`.reconciler`: ``reconciler_cron`` re-emits events for stuck work;
* :mod:`.ops`: ``xtyl-streams`` (``make streams``) prints the streams' state;
* :mod:`.telemetry`: what the relay and the consumer count and time (``docs/metrics.md``), and
  the spans that carry a request's trace through the outbox and the stream into the handler;
* :mod:`.worker_health`: a worker's ``/livez``, ``/readyz`` and ``/metrics`` on
  ``HEALTH_PORT``.
"""

from xtyl_common.events.consumer import StreamConsumer
from xtyl_common.events.contracts import (
    AnyEvent,
    DocumentFailed,
    DocumentFailedPayload,
    DocumentIndexed,
    DocumentIndexedPayload,
    Event,
    FileDeleted,
    FileDeletedPayload,
    FileUploaded,
    FileUploadedPayload,
    InvalidEvent,
    UnknownEventType,
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    UserUpdated,
    UserUpdatedPayload,
    decode_event,
    encode_event,
    stream_key,
)
from xtyl_common.events.handling import Handler
from xtyl_common.events.outbox import add_event, install_outbox
from xtyl_common.events.reconciler import reconciler_cron, reemit_stuck
from xtyl_common.events.relay import OutboxRelay
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.worker import (
    StreamWorker,
    run_stream_worker,
    service_hooks,
    stream_worker_settings,
    worker_entry,
)

__all__ = [
    "AnyEvent",
    "DocumentFailed",
    "DocumentFailedPayload",
    "DocumentIndexed",
    "DocumentIndexedPayload",
    "Event",
    "EventSettings",
    "FileDeleted",
    "FileDeletedPayload",
    "FileUploaded",
    "FileUploadedPayload",
    "Handler",
    "InvalidEvent",
    "OutboxRelay",
    "StreamConsumer",
    "StreamWorker",
    "UnknownEventType",
    "UserCreated",
    "UserCreatedPayload",
    "UserDeleted",
    "UserDeletedPayload",
    "UserUpdated",
    "UserUpdatedPayload",
    "add_event",
    "decode_event",
    "encode_event",
    "install_outbox",
    "reconciler_cron",
    "reemit_stuck",
    "run_stream_worker",
    "service_hooks",
    "stream_key",
    "stream_worker_settings",
    "worker_entry",
]
