"""``notify-worker``: arq worker fed by the ``users`` and ``documents`` streams (group
``notify``).

    python -m xtyl_notify.worker            # or the script xtyl-notify-worker
    arq xtyl_notify.worker.WorkerSettings   # arq's CLI: the same, but arq's own Worker, which
                                            # exits when Redis is down (see run_stream_worker)

* ``user.created``: remember the user's address and name (``xtyl_notify.recipients``, filled
  only from events: no reads of other services' tables), send the welcome email;
* ``user.updated``: the new address and name (later emails go there; an update delivered
  before its user's ``user.created`` is kept, and that older event changes nothing);
* ``user.deleted``: erase the user (:mod:`xtyl_notify.service.accounts`): pending emails
  cancelled, the email log anonymised, recipient, preferences and document notices deleted,
  recorded in ``xtyl_notify.erasures``; idempotent and resumable;
* ``document.indexed`` / ``document.failed``: "your document is ready" / "we could not
  process your document" to the owner, coalesced: at most one email per
  ``DOCUMENT_EMAIL_WINDOW_S`` per user, the events after the first sent together as one
  digest when the window ends, by the worker's digest loop (every
  ``DIGEST_POLL_INTERVAL_S``, a supervised task that joins the worker's ``/readyz``); owners
  with no recipient row, or who turned the kind off, are skipped (logged).

Each handler is one call into :class:`~xtyl_notify.service.NotifyService` (opened at start-up
by :func:`~xtyl_notify.service.open_service`), and idempotent. Brevo down, slow or rate
limiting (408/429/5xx, timeouts) and the database down are transient: the email is logged
``retrying`` and the stream consumer, the one layer that retries these sends, tries the entry
again after Brevo's rate-limit reset (``x-sib-ratelimit-reset``, or ``Retry-After``) when it
gave one, else with backoff (``EVENTS_RETRY_BACKOFF_S`` doubling up to
``EVENTS_RETRY_BACKOFF_MAX_S``), until ``EVENTS_RETRY_HORIZON_S`` (24 h by default) after its
first failure; the attempt past the horizon is the last: the email is then ``failed`` and the
entry dead-lettered. A 4xx from Brevo fails the email and dead-letters the entry at once.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import structlog

from xtyl_common.events import (
    DocumentFailed,
    DocumentIndexed,
    EventSettings,
    UserCreated,
    UserDeleted,
    UserUpdated,
    stream_worker_settings,
    worker_entry,
)
from xtyl_common.events.retries import is_final_attempt
from xtyl_common.events.worker_health import joining_worker
from xtyl_notify.service import DigestLoop, NotifyService, open_service
from xtyl_notify.settings import NotifySettings

log = structlog.stdlib.get_logger("xtyl.notify.worker")

GROUP = "notify"
PROGRAM = "xtyl-notify-worker"


#: Where the worker's start-up keeps the service in arq's ``ctx``.
SERVICE_CTX_KEY = "notify"


def service_of(ctx: dict[Any, Any]) -> NotifyService:
    service: NotifyService = ctx[SERVICE_CTX_KEY]
    return service


async def on_user_created(event: UserCreated, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).on_user_created(event, final_attempt=is_final_attempt(ctx))


async def on_user_updated(event: UserUpdated, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).on_user_updated(event)


async def on_user_deleted(event: UserDeleted, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).on_user_deleted(event)


async def on_document_indexed(event: DocumentIndexed, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).on_document_indexed(event, final_attempt=is_final_attempt(ctx))


async def on_document_failed(event: DocumentFailed, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).on_document_failed(event, final_attempt=is_final_attempt(ctx))


def queue_name(stream_prefix: str) -> str:
    """The worker's own arq queue (it has no jobs of its own; never arq's shared default)."""
    return f"{stream_prefix}:notify:jobs"


def worker_settings(
    settings: NotifySettings,
    events: EventSettings | None = None,
    *,
    consumer_name: str | None = None,
) -> dict[str, Any]:
    """arq ``WorkerSettings`` (a dict) for one notify-worker process."""
    events = events or EventSettings()

    async def startup(ctx: dict[Any, Any]) -> None:
        stack = AsyncExitStack()
        ctx["notify_stack"] = stack
        try:
            service = await stack.enter_async_context(open_service(settings, events))
            digests = DigestLoop(service.documents, interval_s=settings.digest_poll_interval_s)
            digests.start()
            stack.push_async_callback(digests.stop)
        except BaseException:
            await stack.aclose()
            raise
        ctx[SERVICE_CTX_KEY] = service
        health = joining_worker()  # the worker whose start-up this is: it reports the loop
        if health is not None:
            health.add("digest_sender", digests.check_health, digests.states)
        log.info(
            "notify_worker_started",
            brevo_api_url=settings.brevo_api_url,
            sender=settings.sender.email,
            max_jobs=events.max_jobs,
            document_email_window_s=settings.document_email_window_s,
        )

    async def shutdown(ctx: dict[Any, Any]) -> None:
        stack: AsyncExitStack | None = ctx.pop("notify_stack", None)
        if stack is not None:
            await stack.aclose()

    return stream_worker_settings(
        redis_url=settings.redis_url,
        group=GROUP,
        handlers={
            UserCreated: on_user_created,
            UserUpdated: on_user_updated,
            UserDeleted: on_user_deleted,
            DocumentIndexed: on_document_indexed,
            DocumentFailed: on_document_failed,
        },
        events=events,
        on_startup=startup,
        on_shutdown=shutdown,
        consumer_name=consumer_name,
        queue_name=queue_name(events.stream_prefix),
        handle_signals=True,
    )


__getattr__, main = worker_entry(NotifySettings, worker_settings, program=PROGRAM)


if __name__ == "__main__":
    main()
