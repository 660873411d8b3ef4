"""``storage-worker``: arq worker fed by the ``users`` stream (group ``storage``).

    python -m xtyl_storage.worker            # or the script xtyl-storage-worker
    arq xtyl_storage.worker.WorkerSettings   # arq's CLI: the same, but arq's own Worker, which
                                             # exits when Redis is down (see run_stream_worker)

* ``user.deleted``: erase everything storage holds for the user
  (:meth:`~xtyl_storage.service.accounts.Accounts.erase_user`): their objects and unfinished
  multipart uploads in the bucket, their rows, their published outbox rows; recorded in
  ``xtyl_storage.erasures``. Idempotent and resumable: a worker killed half-way leaves the
  entry pending, and the consumer that takes it over finishes the erasure; a redelivery after
  it completed does nothing. S3 or Postgres failing is transient (retried with backoff by the
  stream consumer); so is an erasure waiting for presigned PUT URLs to expire.

Other entries of the ``users`` stream (``user.created``, ``user.updated``) are acknowledged and
skipped. The worker publishes no events: its process runs no outbox relay.
"""

from __future__ import annotations

from typing import Any

import structlog

from xtyl_common.events import (
    EventSettings,
    UserDeleted,
    service_hooks,
    stream_worker_settings,
    worker_entry,
)
from xtyl_storage.service import StorageService, open_service
from xtyl_storage.settings import StorageSettings

log = structlog.stdlib.get_logger("xtyl.storage.worker")

GROUP = "storage"
PROGRAM = "xtyl-storage-worker"
#: Where the worker's start-up keeps the service in arq's ``ctx``.
SERVICE_CTX_KEY = "storage"


def service_of(ctx: dict[Any, Any]) -> StorageService:
    service: StorageService = ctx[SERVICE_CTX_KEY]
    return service


async def on_user_deleted(event: UserDeleted, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).erase_user(event.payload.user_id, requested_at=event.occurred_at)


def queue_name(stream_prefix: str) -> str:
    """The worker's own arq queue (it has no jobs of its own; never arq's shared default)."""
    return f"{stream_prefix}:storage:jobs"


def worker_settings(
    settings: StorageSettings,
    events: EventSettings | None = None,
    *,
    consumer_name: str | None = None,
) -> dict[str, Any]:
    """arq ``WorkerSettings`` (a dict) for one storage-worker process."""
    events = events or EventSettings()

    startup, shutdown = service_hooks(
        SERVICE_CTX_KEY,
        lambda: open_service(settings, events=events, run_relay=False),
        started=lambda: log.info(
            "storage_worker_started",
            bucket=settings.r2_bucket,
            erasure_batch_size=settings.erasure_batch_size,
        ),
    )

    return stream_worker_settings(
        redis_url=settings.redis_url,
        group=GROUP,
        handlers={UserDeleted: on_user_deleted},
        events=events,
        on_startup=startup,
        on_shutdown=shutdown,
        consumer_name=consumer_name,
        queue_name=queue_name(events.stream_prefix),
        handle_signals=True,
    )


__getattr__, main = worker_entry(StorageSettings, worker_settings, program=PROGRAM)


if __name__ == "__main__":
    main()
