"""``open_service``: the one place that builds notify (its adapters, the send path, document
emails, accounts), for the app's lifespan and the worker's start-up alike."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.erasure import ErasureBacklog
from xtyl_common.events import EventSettings
from xtyl_common.events.retries import RetryPolicy
from xtyl_common.http import HttpConfig, create_session
from xtyl_notify.adapters.accounts import AccountRepository
from xtyl_notify.adapters.brevo import BrevoClient
from xtyl_notify.adapters.documents import DocumentNoticeRepository
from xtyl_notify.adapters.postgres import LEDGER, NotifyRepository
from xtyl_notify.domain.addresses import AddressHasher
from xtyl_notify.domain.preferences import UnsubscribeLinks
from xtyl_notify.service.accounts import Accounts
from xtyl_notify.service.documents import DocumentMails
from xtyl_notify.service.notify import NotifyService
from xtyl_notify.service.sending import Sender
from xtyl_notify.settings import NotifySettings

#: How long one send attempt holds its email beyond Brevo's timeout (the row updates).
LEASE_MARGIN_S = 10.0


@asynccontextmanager
async def open_service(
    settings: NotifySettings, events: EventSettings | None = None
) -> AsyncGenerator[NotifyService]:
    """The service and its adapters (a Postgres pool, Brevo's HTTP session), closed on exit.
    ``events``: the worker's retry terms, which digests follow too."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        stack.push_async_callback(pool.close)
        backlog = ErasureBacklog(pool, LEDGER)
        backlog.start()
        stack.push_async_callback(backlog.stop)
        session = create_session(
            HttpConfig(
                connect_timeout_s=settings.brevo_connect_timeout_s,
                total_timeout_s=settings.brevo_timeout_s,
                read_timeout_s=settings.brevo_timeout_s,
            )
        )
        stack.push_async_callback(session.close)
        brevo = BrevoClient(
            session,
            base_url=settings.brevo_api_url,
            api_key=settings.api_key,
            sender=settings.sender,
            timeout_s=settings.brevo_timeout_s,
            connect_timeout_s=settings.brevo_connect_timeout_s,
        )
        repository = NotifyRepository(pool)
        addresses = AddressHasher(settings.address_pepper)
        links = UnsubscribeLinks(settings.unsubscribe_secrets, settings.public_base_url)
        sender = Sender(
            repository,
            brevo,
            lease_s=settings.brevo_timeout_s + LEASE_MARGIN_S,
            addresses=addresses,
        )
        documents = DocumentMails(
            DocumentNoticeRepository(pool),
            sender,
            links,
            app_url=settings.frontend_url,
            window_s=settings.document_email_window_s,
            retry=RetryPolicy.of(events or EventSettings()),
        )
        accounts = Accounts(
            AccountRepository(pool),
            repository,
            links,
            addresses,
            brevo,
            batch_size=settings.erasure_batch_size,
            batch_pause_s=settings.erasure_batch_pause_s,
        )
        yield NotifyService(
            sender,
            documents,
            accounts,
            app_url=settings.frontend_url,
            auth_templates=settings.auth_templates,
            readiness={"postgres": repository.check},
        )
