"""The one place that wires the notify service: the app's lifespan and the worker's
``on_startup`` both open a :class:`NotifyCore`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import asyncpg

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.http import HttpConfig, create_session
from xtyl_notify.adapters.brevo import BrevoClient
from xtyl_notify.adapters.postgres import NotifyRepository
from xtyl_notify.notifications import Notifier
from xtyl_notify.settings import NotifySettings

#: How long one send attempt holds its email beyond Brevo's timeout (the row updates).
LEASE_MARGIN_S = 10.0


@dataclass(frozen=True, slots=True)
class NotifyCore:
    settings: NotifySettings
    pool: asyncpg.Pool
    session: aiohttp.ClientSession
    repository: NotifyRepository
    brevo: BrevoClient

    def notifier(self) -> Notifier:
        return Notifier(
            self.repository,
            self.brevo,
            app_url=self.settings.frontend_url,
            lease_s=self.settings.brevo_timeout_s + LEASE_MARGIN_S,
        )


@asynccontextmanager
async def open_core(settings: NotifySettings) -> AsyncGenerator[NotifyCore]:
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        stack.push_async_callback(pool.close)
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
        yield NotifyCore(
            settings=settings,
            pool=pool,
            session=session,
            repository=NotifyRepository(pool),
            brevo=brevo,
        )
